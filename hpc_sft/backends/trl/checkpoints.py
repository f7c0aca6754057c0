"""Trainer checkpoint-N directories of the trl backend: complete or torn, newest complete one, progress facts.

No heavy imports: the Slurm finish-or-requeue decision reads these on every node.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Optional

from ..._worker.hpc_sft_shim.resume import MARKER, marker_problem, marker_totals, write_marker  # one format
from ...requeue import StateFacts
from ...rundir.layout import hf_checkpoints

log = logging.getLogger("hpc_sft.trl")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "adapter_model.safetensors", "adapter_model.bin")


def mark_complete(path: Path, global_step: int, save_seconds: Optional[float] = None) -> None:
    """Declare checkpoint-N complete: call once every rank's files are on disk."""
    write_marker(str(path), {"global_step": global_step},
                 {"save_seconds": save_seconds} if save_seconds is not None else None)


def measured_save(output_dir) -> tuple[Optional[float], Optional[int]]:
    """(longest save in seconds, largest size in bytes) recorded in the markers of the checkpoint-N kept."""
    return marker_totals(p for _, p in checkpoints(output_dir))


def drop_marker(path: Path) -> None:
    """Before checkpoint-N is (re)written: it is not complete until mark_complete runs again."""
    (path / MARKER).unlink(missing_ok=True)


def checkpoint_problem(path: Path) -> Optional[str]:
    """Why a checkpoint-N cannot be resumed from, or None when it is complete."""
    problem = marker_problem(path)
    if problem:
        return problem
    names = set(json.loads((path / MARKER).read_text())["files"])
    for needed in ("trainer_state.json", "optimizer.pt", "scheduler.pt"):
        if needed not in names:
            return f"missing {needed}"
    if not names.intersection(WEIGHT_FILES):
        return "no model weights"
    return None


def checkpoints(output_dir) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint-N directory, newest first."""
    root = Path(output_dir)
    found = []
    for child in root.iterdir() if root.is_dir() else ():
        match = CHECKPOINT_RE.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found, reverse=True)


def latest_complete_checkpoint(output_dir, say=log.warning) -> Optional[Path]:
    """The newest complete checkpoint-N under output_dir; torn ones are skipped with a log line."""
    for _, path in checkpoints(output_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        say(f"trl checkpoint {path} is torn ({problem}); skipping it and trying the previous one")
    return None


def progress(output_dir, effective_batch_size: int, num_epochs: int,
             say=log.warning) -> tuple[Optional[StateFacts], Optional[Path]]:
    """StateFacts of the newest complete checkpoint-N for requeue.decide(): finished once the last step's
    checkpoint and its final hf_format/samples_N both exist; otherwise a mid-run position."""
    path = latest_complete_checkpoint(output_dir, say)
    if path is None:
        return None, None
    state = json.loads((path / "trainer_state.json").read_text())
    step, max_steps = int(state["global_step"]), int(state.get("max_steps") or 0)
    samples = step * effective_batch_size
    final = dict((n, p) for n, p in hf_checkpoints(output_dir)).get(samples)
    if max_steps and step >= max_steps and final is not None:
        return StateFacts(max(0, num_epochs - 1), samples, None), path
    return StateFacts(int(state.get("epoch") or 0), samples, step), path
