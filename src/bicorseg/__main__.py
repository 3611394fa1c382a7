"""``python -m bicorseg``: the command line, the same as the ``bicorseg`` script."""

import sys

from bicorseg.cli.main import main

sys.exit(main())
