"""``python -m zodbtasks.dashboard``: the same as ``zodbtasks dashboard``."""
import sys

from zodbtasks.dashboard.command import main

sys.exit(main())
