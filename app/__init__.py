"""A speech-to-text service: HTTP and WebSocket API over a compact CTC acoustic model."""

import os

# NumPy's BLAS does only small products here (the log-mel filterbank); its own pool of threads,
# one per core by default, spins against the model's threads and slowed both several-fold on a
# busy 2-core machine (bench/slim_frontend.py, bench/slim_recognizer.py). Set before NumPy loads,
# so a program that embeds the recognizer imports ``app`` first; an explicit value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
