"""instructlab-training's full training states full_state/epoch_E: complete or torn, repair, quarantine, save time."""
from __future__ import annotations

import io
import os
import pickle
import re
import time
import zipfile
from pathlib import Path
from typing import Optional

from ..._worker.hpc_sft_shim.resume import MARKER, marker_problem, marker_totals  # the shim writes markers
from ...rundir.layout import FULL_STATE, QUARANTINE

REQUIRED = ("training_metadata.json", "optimizer.bin", "scheduler.bin")


def full_states(ckpt_dir: Path) -> list[Path]:
    """full_state/epoch_E directories, newest (largest E, as instructlab-training picks) first."""
    root = Path(ckpt_dir) / FULL_STATE
    found = [p for p in root.iterdir() if re.fullmatch(r"epoch_\d+", p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.rsplit("_", 1)[1]), reverse=True)


def state_problem(path: Path) -> Optional[str]:
    """Why a full state cannot be resumed from, or None when it is complete and loadable."""
    if (path / MARKER).is_file():  # states written before the shim published markers have none
        problem = marker_problem(path)
        if problem:
            return problem
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    if not any(path.glob("random_states_*.pkl")):
        return "missing random_states_*.pkl"
    if not any(path.glob("model*.safetensors")) and not any(path.glob("pytorch_model*")):
        return "no model weights"
    try:
        read_metadata(path)
    except Exception as exc:  # torch raises many kinds for a torn zip
        return f"training_metadata.json unreadable ({type(exc).__name__})"
    return None


class NeedsTorch(Exception):
    """The pickle holds more than plain values (tensors, classes): let torch read it."""


class PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise NeedsTorch(f"{module}.{name}")

    def persistent_load(self, pid):
        raise NeedsTorch("a tensor")


def read_metadata(path: Path) -> dict:
    """training_metadata.json: a torch.save zip of a dict of numbers. Read as a plain pickle, because importing
    torch (1.5 s) for it was on node 0's critical path at every restart; anything else falls back to torch.load.
    A torn file raises (zipfile.BadZipFile, a CRC error, KeyError) as torch.load would."""
    with zipfile.ZipFile(path / "training_metadata.json") as archive:
        name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
        if name is None:
            raise KeyError(f"no data.pkl in {path / 'training_metadata.json'}")
        data = archive.read(name)
    try:
        return PlainUnpickler(io.BytesIO(data)).load()
    except NeedsTorch:
        import torch

        return torch.load(path / "training_metadata.json", weights_only=True)


def repair_and_quarantine(ckpt_dir: Path, log=None) -> list[Path]:
    """Before a run: finish or undo an interrupted publish, then move torn states aside."""
    from ..._worker.hpc_sft_shim.resume import repair_full_states

    repair_full_states(ckpt_dir, log=log)
    return quarantine_torn(ckpt_dir, log)


def quarantine_torn(ckpt_dir: Path, log=None) -> list[Path]:
    """Move every unusable full state to {ckpt}/quarantine/ (outside full_state/); return the new paths."""
    moved = []
    for path in full_states(ckpt_dir):
        problem = state_problem(path)
        if problem is None:
            continue
        target = Path(ckpt_dir) / QUARANTINE / f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, target)
        moved.append(target)
        if log:
            log(f"full state {path} is torn ({problem}); moved it to {target}; resuming from the previous one")
    return moved


def measured_save(ckpt_dir: Path) -> tuple[Optional[float], Optional[int]]:
    """(longest save in seconds, largest size in bytes) recorded in the markers of the full states kept."""
    return marker_totals(full_states(ckpt_dir))


def newest_state(ckpt_dir: Path):
    """(path, metadata) of the newest complete full state, or (None, None)."""
    for path in full_states(ckpt_dir):
        if state_problem(path) is None:
            return path, read_metadata(path)
    return None, None
