"""Worker start-up shim: this folder goes first on the PYTHONPATH of the torchrun workers (see sitecustomize.py)."""
