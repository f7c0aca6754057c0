"""Executors say where a run happens: plan() is pure (drives --dry-run), submit() is the side effect."""
from __future__ import annotations

from ..registry import load

EXECUTORS = {"local": "hpc_sft.executors.local:LocalExecutor",
             "slurm": "hpc_sft.executors.slurm:SlurmExecutor"}


def get(name: str):
    """An executor instance by name (the slurm one imports submitit only when used)."""
    return load(EXECUTORS[name])()
