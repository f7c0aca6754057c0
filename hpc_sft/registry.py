"""Names of algorithms, backends and executors mapped to their classes, imported only when asked for."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import ConfigError

# algorithm name -> (algorithm class path, {backend name -> backend class path}); first backend is the default
ALGORITHMS: dict[str, tuple[str, dict[str, str]]] = {
    "sft": ("hpc_sft.algorithms:SFTAlgorithm",
            {"instructlab-training": "hpc_sft.backends.instructlab.backend:InstructLabTrainingSFTBackend",
             "trl": "hpc_sft.backends.trl.backend:TRLSFTBackend"}),
}



@dataclass(frozen=True)
class ExecutorEntry:
    """Where an executor's class and pre-submit checks live, and what it asks of the config."""

    cls: str
    checks: str  # `(plan, dry_run) -> Checks`
    slurm_options: bool  # takes slurm=... / [slurm] (its node count then sets the world size)
    offline_nodes: bool  # trains on compute nodes that may have no network (a hub id must be cached first)
    allocates: bool = False  # asks Slurm for the resources (so e.g. device='cuda' needs slurm.gpus_per_node)
    sweeps: str = ""  # the class that plans, checks and submits sweeps, when the executor runs them


EXECUTORS: dict[str, ExecutorEntry] = {
    "local": ExecutorEntry("hpc_sft.executors.local:LocalExecutor", "hpc_sft.pipeline:local_checks", False, False),
    "slurm": ExecutorEntry("hpc_sft.executors.slurm.executor:SlurmExecutor",
                           "hpc_sft.executors.slurm.executor:preflight", True, True, True,
                           "hpc_sft.executors.slurm.array:SlurmSweeps"),
    "srun": ExecutorEntry("hpc_sft.executors.srun:SrunExecutor", "hpc_sft.executors.srun:srun_checks", True, True),
}


def ignores_slurm_options(executor: str) -> bool:
    """True for a known executor that would ignore slurm=... (an unknown name is refused elsewhere)."""
    entry = EXECUTORS.get(executor)
    return entry is not None and not entry.slurm_options


def load(path: str):
    """'pkg.module:Name' -> the object (imports the module; backends keep heavy imports inside)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _entry(algorithm: str):
    if algorithm not in ALGORITHMS:
        raise ConfigError("algorithm_name", f"unknown algorithm {algorithm!r}",
                          f"use one of: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[algorithm]


def backend_class(name: str | None, algorithm: str = "sft"):
    """The backend class registered under `name` (None: the default) for `algorithm`."""
    backends = _entry(algorithm)[1]
    if name is None:
        name = next(iter(backends))
    if name not in backends:
        raise ConfigError("backend", f"unknown backend {name!r} for {algorithm}",
                          f"use one of: {', '.join(backends)}")
    return load(backends[name])


def backend_classes(algorithm: str = "sft") -> list:
    """Every backend class registered for `algorithm`, the default first (for questions asked of all)."""
    return [load(path) for path in _entry(algorithm)[1].values()]


def algorithm_class(name: str):
    return load(_entry(name)[0])
