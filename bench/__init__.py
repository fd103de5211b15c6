"""The load and speed harness: workload, load generator, offline ceiling, peers and reports.

Every benchmark is a module with a command line (``python -m bench.<name> --help``); results go
to ``bench/results/`` as JSON and, for the headline figures, into ``docs/benchmarks.md``.
"""

import app  # noqa: F401  # first, before NumPy loads: it limits NumPy's BLAS to one thread, as the server runs
