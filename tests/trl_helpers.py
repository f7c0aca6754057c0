"""Shared by the trl backend tests: validated configs, CPU launches, a small data file, run kwargs."""
from __future__ import annotations

import json
from pathlib import Path

from hpc_sft.config.validate import build_config, split_values
from hpc_sft.launch import Launch
from hpc_sft.rundir.layout import METRICS_FILE, result_from_disk

from tests.helpers import tiny_sft_kwargs

ILT_ONLY = ("max_tokens_per_gpu",)


def trl_config(backend_kwargs=None, **kw):
    """A validated SFTConfig for backend='trl'."""
    return build_config(*split_values({**kw, "backend": "trl", **dict(backend_kwargs or {})}))


def cpu(nproc=1, nnodes=1):
    return Launch(nproc_per_node=nproc, nnodes=nnodes, device="cpu")


def run_kwargs(model, data, ckpt, **over):
    kw = {k: v for k, v in tiny_sft_kwargs(model, data, ckpt, **over).items() if k not in ILT_ONLY}
    return kw


def weights(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    result = result_from_disk(ckpt)
    return load_file(result.checkpoint_path / "model.safetensors")


def losses(ckpt: Path) -> list[float]:
    rows = [json.loads(line) for line in (ckpt / METRICS_FILE).read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]
