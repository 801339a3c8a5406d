import sys

from lmtune.cli import main

if __name__ == "__main__":  # not when a spawned process re-imports this module
    sys.exit(main())
