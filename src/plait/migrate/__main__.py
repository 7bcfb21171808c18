"""``python -m plait.migrate PATH...``; see :func:`plait.migrate.main`."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
