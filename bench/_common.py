"""Shared helpers for the cluster benchmarks: tiny inputs, metrics timestamps, Slurm job facts."""
from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench"


def tiny_inputs(n: int = 1200) -> tuple[Path, Path]:
    from hpc_sft.tiny import build_tiny_model, write_tiny_dataset

    model = build_tiny_model(CACHE / "tiny-model")
    data = CACHE / f"train-{n}.jsonl"
    if not data.is_file():
        write_tiny_dataset(data, n=n)
    return model, data


def sft_kwargs(model: Path, data: Path, ckpt: Path, backend: str = "instructlab-training", **over) -> dict:
    """The fast tiny CPU job for either backend (trl: a fixed seed, no instructlab-training-only field)."""
    from hpc_sft.tiny import fast_cpu_kwargs

    kw = fast_cpu_kwargs(model, data, ckpt, backend=backend, **over)
    if backend == "trl":
        kw.setdefault("seed", 42)
    return kw


def step_records(ckpt: Path) -> list[dict]:
    path = Path(ckpt) / "training_params_and_metrics_global0.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [r for r in rows if "samples_seen" in r and "step" in r]


def ts(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"]).timestamp()


STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")  # the node task's and submitit's log time stamps


def stamp(line: str) -> float:
    """The UNIX time of a log line that carries a STAMP."""
    return datetime.strptime(STAMP.search(line).group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def job_start(job_id: str) -> float:
    """The allocation's StartTime (of its latest run) from scontrol, as a UNIX time."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True)
    fields = dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)
    return datetime.fromisoformat(fields["StartTime"]).timestamp()
