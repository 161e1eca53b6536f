"""``python -m middlewared_cc.cli``: the same as ``midclt-cc``."""

import sys

from middlewared_cc.cli import main

sys.exit(main())
