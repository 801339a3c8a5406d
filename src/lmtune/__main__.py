import sys

from lmtune.cli import main

if __name__ == "__main__":  # not when a spawned process (transformers serve 5.25 engine) re-imports it
    sys.exit(main())
