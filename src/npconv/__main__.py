"""``python -m npconv ...``: the same command line as the ``npconv`` script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
