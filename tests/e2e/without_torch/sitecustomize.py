"""Makes PyTorch unimportable in a process that has this folder on PYTHONPATH, as in the slim
install: ``import torch`` raises ImportError. The slim e2e test starts the server with it."""

import sys

for _name in ("torch", "torchaudio"):
    sys.modules[_name] = None  # type: ignore[assignment]
