"""TrainingResult: what a finished run hands back (final checkpoint, samples seen, metrics, restarts)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class TrainingResult:
    ckpt_output_dir: Path
    checkpoint_path: Optional[Path]  # latest hf_format checkpoint, loadable with from_pretrained
    samples_seen: Optional[int]
    metrics_file: Optional[Path]
    restarts: int = 0
