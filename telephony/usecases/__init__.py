"""Use cases, one module per family: each opens its transaction, applies the rules of
`domain`, calls `storage`, and writes the audit trail. No HTTP, no SQL."""
