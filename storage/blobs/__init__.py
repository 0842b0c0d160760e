"""Blobs: the store's `protocol` (immutable named objects), their `names`, the `filesystem`
store, and the media node's `spool` of sealed parts on their way to the store."""
