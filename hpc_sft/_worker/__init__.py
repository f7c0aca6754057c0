"""Worker start-up shim: SHIM_DIR goes first on PYTHONPATH of the process running torchrun."""

import os
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent


def pythonpath_with_shim(existing: str | None = None) -> str:
    """Return a PYTHONPATH value with SHIM_DIR first (no duplicate entries)."""
    parts = [p for p in (existing or "").split(os.pathsep) if p]
    parts = [p for p in parts if Path(p).resolve() != SHIM_DIR]
    return os.pathsep.join([str(SHIM_DIR), *parts])
