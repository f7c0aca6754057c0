"""Helpers the tests import (fixtures live in conftest.py): paths, small files, the fast CPU run's kwargs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HPC_SFT_TEST_CACHE", REPO / ".cache" / "tests"))
MSG = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def tiny_sft_kwargs(model: Path, data: Path, ckpt: Path, **over) -> dict:
    """A fast real CPU run: 256 samples, batch 16 -> 16 optimizer steps per epoch."""
    from hpc_sft.tiny import fast_cpu_kwargs

    return fast_cpu_kwargs(model, data, ckpt, **over)


def write_recipe(folder: Path, ckpt: str, executor: str = "slurm", extra: str = "") -> Path:
    """A small valid recipe (model and data stand-ins beside it) for the CLI tests."""
    (folder / "model").mkdir(exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        (folder / "model" / name).write_text("{}")
    (folder / "train.jsonl").write_text(json.dumps(MSG) + "\n")
    slurm = '[slurm]\nnodes = 1\ntime = "00:30:00"\nsignal_lead_s = 60\n' if executor == "slurm" else ""
    path = folder / "recipe.toml"
    path.write_text(f'executor = "{executor}"\n[sft]\nmodel_path = "./model"\ndata_path = "train.jsonl"\n'
                    f'ckpt_output_dir = "{ckpt}"\nnum_epochs = 1\neffective_batch_size = 8\nlearning_rate = 1e-4\n'
                    f'max_seq_len = 256\nmax_tokens_per_gpu = 2048\ndevice = "cpu"\n{extra}{slurm}')
    return path


def cli(*args, env=None, user=None):
    """`hpc-sft ARGS` in a fresh process, as the user sees it (optionally as another user)."""
    command = [sys.executable, "-m", "hpc_sft.cli", *map(str, args)]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def run_as_worker(folder: Path, source: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run `source` the way torchrun runs instructlab-training's worker script (the path ends in
    instructlab/training/main_ds.py, hpc-sft's shim on PYTHONPATH, `env` added), with `folder` as its argument."""
    from hpc_sft.launch import WORKER_DIR

    script = folder / "instructlab" / "training" / "main_ds.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(source)
    return subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(WORKER_DIR), **env})
