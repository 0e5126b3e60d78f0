"""``python -m zodbtasks``: the ``zodbtasks`` command."""
import sys

from zodbtasks.cli import main

if __name__ == '__main__':
    sys.exit(main())
