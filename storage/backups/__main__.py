"""`python -m storage.backups archive-wal URL PATH NAME`: the embedded cluster's
archive_command (storage/backups/wal.py)."""

import sys

from storage.backups.wal import main

sys.exit(main(sys.argv[1:]))
