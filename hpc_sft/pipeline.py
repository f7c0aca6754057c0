"""The one validate -> plan -> check -> submit path of sft(), SFTAlgorithm.train, `hpc-sft submit` and the demo."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from . import executors, registry
from .config import hub
from .config import sweep as sweeps
from .config.validate import build_config, check_tokenizer, looks_local, split_values
from .errors import ConfigError, HpcSftError
from .executors import Checks
from .rundir import settings as run_settings

log = logging.getLogger("hpc_sft")
MODEL_FILES = "model_path files (config.json, tokenizer)"
MODEL_ID = "model_path hub id resolved in the local Hugging Face cache"


@dataclass(frozen=True)
class Prepared:
    """A validated, planned and checked run: what submit() would do, and what the checks found."""

    plan: Any
    backend: Any
    checks: Checks

    @property
    def config(self):
        return self.plan.config


def validate(values: Mapping[str, Any]):
    """The SFTConfig of one flat mapping of sft() arguments (backend kwargs included)."""
    return build_config(*split_values(values))


def prepare(config, backend=None, dry_run: bool = False) -> Prepared:
    """Plan and check a validated config; raises what would fail before anything is queued or started."""
    config, found = resolve_model_id(config, dry_run)
    plan = executors.get(config.executor).plan(config)
    backend = backend or registry.backend_class(config.backend)()
    run_settings.check(config, backend.free_kwargs)
    checks = found + model_checks(config, dry_run) + executors.checks_for(config.executor)(plan, dry_run)
    return Prepared(plan, backend, checks)


def submit(prepared: Prepared) -> Any:
    """The side effect: train here (TrainingResult) or queue the Slurm job (its handle)."""
    return executors.get(prepared.config.executor).submit(prepared.plan, prepared.backend)


def run(config, backend=None, warn: Callable[[str], None] = log.warning) -> Any:
    """prepare -> report warnings -> submit."""
    prepared = prepare(config, backend)
    for text in prepared.checks.warnings:
        warn(text)
    return submit(prepared)


def validate_sweep(values: Mapping[str, Any]):
    """(Sweep, one SFTConfig per task) of sft() arguments holding `sweep`; every task is validated before
    anything is planned, and an error about a swept value names where it is written and the task."""
    table = values["sweep"]
    executor = values.get("executor") or "local"
    if executor in registry.EXECUTORS and not registry.EXECUTORS[executor].sweeps:
        raise ConfigError("sweep", f"runs as Slurm job arrays, but executor is {executor!r}",
                          'set executor = "slurm" (each task then trains in its own job, requeue-safe)')
    sweep = sweeps.parse(table)
    if not values.get("ckpt_output_dir"):
        raise ConfigError("ckpt_output_dir", "is required", "set it: each task trains in a folder under it")
    root = Path(values["ckpt_output_dir"]).expanduser().resolve()
    configs = []
    for task in sweep.tasks:
        try:
            configs.append(validate(sweeps.task_values(values, task, root)))
        except HpcSftError as exc:
            raise sweeps.located(sweep, exc, task) from None
    return sweep, tuple(configs)


@dataclass(frozen=True)
class PreparedSweep:
    """A validated, planned and checked sweep: one plan of job arrays, the backend, what the checks found."""

    plan: Any
    backend: Any
    checks: Checks

    @property
    def config(self):
        return self.plan.config


def prepare_sweep(sweep, configs, dry_run: bool = False) -> PreparedSweep:
    """Every task's model and settings checks, then the arrays' Slurm checks (each said once)."""
    found, resolved = Checks(), []
    for config in configs:
        config, checked = resolve_model_id(config, dry_run)
        resolved.append(config)
        found = found + checked + model_checks(config, dry_run)
    backend = registry.backend_class(resolved[0].backend)()
    for config in resolved:
        run_settings.check(config, backend.free_kwargs)
    runner = sweep_runner(resolved[0].executor)
    plan = runner.plan(sweep, tuple(resolved))
    return PreparedSweep(plan, backend, (found + runner.checks(plan, dry_run)).once())


def sweep_runner(executor: str):
    """The executor's sweep runner (plan, checks, submit); validate_sweep refused executors without one."""
    return registry.load(registry.EXECUTORS[executor].sweeps)()


def run_sweep(sweep, configs, warn: Callable[[str], None] = log.warning):
    """prepare_sweep -> report warnings -> submit_sweep."""
    prepared = prepare_sweep(sweep, configs)
    for text in prepared.checks.warnings:
        warn(text)
    return submit_sweep(prepared)


def submit_sweep(prepared: PreparedSweep):
    """The side effect of a sweep: its job arrays queued (a SweepJob: one handle per task)."""
    return sweep_runner(prepared.config.executor).submit(prepared.plan, prepared.backend)


def resolve_model_id(config, dry_run: bool):
    """A hub id as model_path -> its cached snapshot directory (config, what was found). Executors whose nodes
    may be offline refuse an id that is not cached; a local run leaves it to the backend to download."""
    if looks_local(config.model_path):
        return config, Checks()
    try:
        snapshot = hub.cached_snapshot(config.model_path)
    except ConfigError as exc:
        if not registry.EXECUTORS[config.executor].offline_nodes:
            return config, Checks(ran=(f"model_path {config.model_path}: not cached; the backend downloads it",))
        if not dry_run:
            raise
        return config, Checks(ran=(MODEL_ID,), warnings=(f"{exc} (submit refuses this)",))
    found = Checks(ran=(f"{MODEL_ID}: {config.model_path} -> {snapshot}",))
    return replace(config, model_path=snapshot), found


def model_checks(config, dry_run: bool) -> Checks:
    """Files the run will need from model_path (a dry run reports a problem as a warning; submit refuses)."""
    try:
        check_tokenizer(config.model_path)
    except ConfigError as exc:
        if not dry_run:
            raise
        return Checks(ran=(MODEL_FILES,), warnings=(f"{exc} (submit refuses this)",))
    return Checks(ran=(MODEL_FILES,))


def local_checks(plan, dry_run: bool = False) -> Checks:
    """executor='local': a requested GPU must be visible here (imports torch only when device='cuda')."""
    if plan.config.device != "cuda":
        return Checks()
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("device", "is 'cuda' but no GPU is visible on this machine (torch.cuda.is_available() "
                          "is False)", 'use device = "cpu" (or leave device unset: cuda when visible, else cpu), '
                          'or run where a GPU is visible (executor = "slurm" with slurm.gpus_per_node)')
    return Checks(ran=("device cuda: a GPU is visible",))
