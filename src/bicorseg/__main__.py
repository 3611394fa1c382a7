"""``python -m bicorseg``: the command line, the same as the ``bicorseg`` script."""

import sys

from bicorseg.cli.main import main

if __name__ == "__main__":  # importing the module (to list the package, say) runs nothing
    sys.exit(main())
