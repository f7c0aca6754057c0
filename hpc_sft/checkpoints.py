"""Read what a run left in ckpt_output_dir: hf_format checkpoints and the metrics file (no torch)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .result import TrainingResult

SAMPLES_RE = re.compile(r"^samples_(\d+)$")


def hf_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(samples, path) of every complete hf_format/samples_N checkpoint, oldest first."""
    root = Path(ckpt_dir) / "hf_format"
    found = []
    for child in root.iterdir() if root.is_dir() else ():
        match = SAMPLES_RE.match(child.name)
        if match and (child / "config.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def metrics_file(ckpt_dir: Path) -> Optional[Path]:
    path = Path(ckpt_dir) / "training_params_and_metrics_global0.jsonl"
    return path if path.is_file() else None


def result_from_disk(ckpt_dir: Path, restarts: int = 0) -> TrainingResult:
    """The TrainingResult of a finished run, read from its checkpoint directory."""
    ckpts = hf_checkpoints(ckpt_dir)
    samples, path = ckpts[-1] if ckpts else (None, None)
    last = Path(ckpt_dir) / "hf_format" / "last_epoch"
    if path is None and (last / "config.json").is_file():
        path = last
    return TrainingResult(Path(ckpt_dir), path, samples, metrics_file(ckpt_dir), restarts)
