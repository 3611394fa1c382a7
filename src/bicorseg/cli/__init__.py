"""The ``bicorseg`` command line: one module per sub-command, discovered by :mod:`bicorseg.cli.main`."""
