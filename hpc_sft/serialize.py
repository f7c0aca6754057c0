"""SFTConfig <-> plain JSON-able dict (for standalone scripts and status records)."""
from __future__ import annotations

import dataclasses
from typing import Any

from .config.slurm_options import SlurmOptions
from .config.spec import SFTConfig


def to_dict(config: SFTConfig) -> dict[str, Any]:
    data = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if isinstance(config.slurm, SlurmOptions):
        slurm = dataclasses.asdict(config.slurm)
        slurm["setup"] = list(slurm["setup"])
        data["slurm"] = slurm
    return data


def from_dict(data: dict[str, Any]) -> SFTConfig:
    """Rebuild a config that was validated when it was written (no re-validation)."""
    data = dict(data)
    if isinstance(data.get("slurm"), dict):
        slurm = dict(data["slurm"])
        slurm["setup"] = tuple(slurm.get("setup", ()))
        data["slurm"] = SlurmOptions(**slurm)
    return SFTConfig(**data)
