"""Helpers of the test suite, imported as a package (``from tests.helpers.data import ...``).

* :mod:`.shared`: the real sample data in ``../shared`` (:func:`shared_path`: skip, or fail in CI).
* :mod:`.models`: tiny random-weight model configs.
* :mod:`.data`, :mod:`.gis`, :mod:`.inference`, :mod:`.training`: helpers of those test folders.
* :mod:`.report`: a real output folder for the report tests.
* :mod:`.range_server`: a range-capable HTTP server on 127.0.0.1; :mod:`.temp_owners`: temporary
  files of the atomic-output scheme, live or stale.

Fixtures that change global state (seeds, torch threads) live in the conftests, not here.
"""
