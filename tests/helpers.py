"""Helpers the tests import (fixtures live in conftest.py): paths, small files, the fast CPU run's kwargs."""
from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HPC_SFT_TEST_CACHE", REPO / ".cache" / "tests"))


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def tiny_sft_kwargs(model: Path, data: Path, ckpt: Path, **over) -> dict:
    """A fast real CPU run: 256 samples, batch 16 -> 16 optimizer steps per epoch."""
    from hpc_sft.tiny import fast_cpu_kwargs

    return fast_cpu_kwargs(model, data, ckpt, **over)
