"""``python -m resources.migrations [URL]``: upgrade the results-store database to head."""

import sys

from resources.migrations import _main

sys.exit(_main(sys.argv[1:]))
