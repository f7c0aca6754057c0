"""Run the next ``sitecustomize`` on sys.path, the one this shim shadows."""

import importlib.machinery
import os
import sys


def _same_dir(entry: str, own_dir: str) -> bool:
    return os.path.realpath(entry or os.curdir) == own_dir


def run_next_sitecustomize(own_dir: str) -> None:
    """Find and execute the first sitecustomize outside ``own_dir``."""
    own_dir = os.path.realpath(own_dir)
    others = [p for p in sys.path if isinstance(p, str) and not _same_dir(p, own_dir)]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is None or spec.loader is None:
        return
    from importlib.util import module_from_spec  # paid only when there is one

    module = module_from_spec(spec)
    sys.modules["_hpc_sft_chained_sitecustomize"] = module
    spec.loader.exec_module(module)
