"""CLI entry: `python -m telephony` and the `telephony` console script."""

from __future__ import annotations

import sys

from telephony.cli import main

if __name__ == "__main__":
    sys.exit(main())
