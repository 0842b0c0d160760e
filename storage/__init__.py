"""Everything that persists: PostgreSQL access, migrations, blobs and keys."""
