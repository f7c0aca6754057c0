"""Sweeps on Slurm: tasks grouped into job arrays (shared sbatch options, at most MaxArraySize tasks each, the
%N throttle for max_parallel), a pure plan, and the submission with one record per task and one for the sweep."""
from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Optional

from ... import jobs
from ...config.sweep import SWEEP_FILE, Sweep, SweepTask, fmt
from ...errors import SubmitError
from ...rundir import lock as ckpt_lock
from . import check as slurm_check
from . import client
from .env import without_outer_job
from .executor import SlurmPlan, job_folder, preflight, removed_on_failure, sbatch_parameters, submit_successor
from .job import SlurmJob, cancel_sweep
from .node_task import NodeTask

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize (array indices 0..1000)


@dataclass(frozen=True)
class ArrayPlan:
    """One sbatch --array: its tasks (with their configs), the options they share, the %N throttle, and the
    array it waits for (afterany) so that max_parallel holds over several arrays."""

    shared: SlurmPlan
    tasks: tuple[tuple[SweepTask, Any], ...]
    throttle: int
    after: Optional[int] = None

    def parameters(self, after_id: Optional[str] = None) -> dict:
        """submitit parameters of this array (the dependency filled in once the earlier array has an id)."""
        params = {**self.shared.parameters, "array_parallelism": self.throttle}
        if self.after is not None:
            dependency = f"afterany:{after_id or f'<job id of array {self.after + 1}>'}"
            params["additional_parameters"] = {**params["additional_parameters"], "dependency": dependency}
        return params

    def sbatch_script(self) -> str:
        """The exact script of this array (%A_%a: the array's job id and task index)."""
        return self.as_job().sbatch_script()

    def as_job(self) -> SlurmPlan:
        """The array as the one sbatch submission it is (submitit submits a single task as a plain job)."""
        count = {"map_count": len(self.tasks)} if len(self.tasks) > 1 else {}
        return SlurmPlan(self.shared.config, self.shared.folder, {**self.parameters(), **count})


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep would submit; nothing here touches Slurm."""

    root: Path
    sweep: Sweep
    arrays: tuple[ArrayPlan, ...]
    max_array_size: int

    @property
    def config(self):
        return self.arrays[0].tasks[0][1]

    @property
    def folder(self) -> Path:
        return self.arrays[0].shared.folder

    @property
    def task_configs(self) -> list[tuple[SweepTask, Any]]:
        return [pair for array in self.arrays for pair in array.tasks]

    def task_table(self) -> list[str]:
        """One line per task: index, array (and index in it), folder, values."""
        rows = [("task", "array", *self.sweep.keys, "ckpt_output_dir")]
        for number, array in enumerate(self.arrays, start=1):
            for index, (task, config) in enumerate(array.tasks):
                values = dict(task.values)
                rows.append((str(task.index), f"{number}[{index}]", *(fmt(values.get(k, "-")) for k in self.sweep.keys),
                             str(config.ckpt_output_dir)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]

    def describe(self) -> str:
        limit = self.sweep.max_parallel
        lines = [f"# sweep: {len(self.sweep.tasks)} tasks in {len(self.arrays)} job array(s) under {self.root}; "
                 f"at most {limit or 'all'} running at once (MaxArraySize {self.max_array_size})",
                 *(f"#   {line}" for line in self.task_table())]
        for number, array in enumerate(self.arrays, start=1):
            lines += [f"# sbatch script of array {number} ({len(array.tasks)} tasks; %A is its job id, %a the index)",
                      array.sbatch_script()]
        lines.append("# per-node launch plan of each task (as for one job; rdzv_id is the task's own job id)")
        return "\n".join(lines + [json.dumps(node) for node in self.arrays[0].shared.node_plan()])


def sweep_job_name(root: Path) -> str:
    return "hpc-sft-" + re.sub(r"[^A-Za-z0-9._-]+", "_", Path(root).name)[:40]


def plan_sweep(sweep: Sweep, configs, folder: Path, max_array_size: int = DEFAULT_MAX_ARRAY_SIZE) -> SweepPlan:
    """Group the tasks by the sbatch options they need (a swept slurm.KEY splits them), cut each group at
    MaxArraySize, and chain the arrays (afterany) when max_parallel must hold over all of them. Pure."""
    root = Path(configs[0].ckpt_output_dir).parent
    groups: dict[str, list] = {}
    for task, config in zip(sweep.tasks, configs):
        params = {**sbatch_parameters(config), "job_name": sweep_job_name(root)}
        groups.setdefault(json.dumps(params, sort_keys=True, default=str), []).append((task, config, params))
    arrays: list[ArrayPlan] = []
    for members in groups.values():
        for start in range(0, len(members), max_array_size):
            chunk = members[start:start + max_array_size]
            throttle = min(len(chunk), sweep.max_parallel or len(chunk))
            after = len(arrays) - 1 if arrays and sweep.max_parallel else None
            arrays.append(ArrayPlan(SlurmPlan(chunk[0][1], folder, chunk[0][2]),
                                    tuple((t, c) for t, c, _ in chunk), throttle, after))
    return SweepPlan(root, sweep, tuple(arrays), max_array_size)


def max_array_size() -> int:
    """The cluster's MaxArraySize (`scontrol show config`); Slurm's default when it does not say."""
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", client.run(["scontrol", "show", "config"]), re.M)
    return int(found.group(1)) if found else DEFAULT_MAX_ARRAY_SIZE


def sweep_checks(plan: SweepPlan, dry_run: bool = False):
    """The Slurm checks of every array (partition, limits, sbatch --test-only of the array script)."""
    from .. import Checks

    found = Checks()
    for array in plan.arrays:
        found = found + preflight(array.as_job(), dry_run)
    return found


class SlurmSweeps:
    """What the pipeline asks of an executor that runs sweeps: plan (MaxArraySize asked of the cluster when it
    can be reached), checks, submit."""

    def plan(self, sweep: Sweep, configs) -> SweepPlan:
        root = replace(configs[0], ckpt_output_dir=str(Path(configs[0].ckpt_output_dir).parent))
        try:
            limit = max_array_size() if slurm_check.client_problem() is None else DEFAULT_MAX_ARRAY_SIZE
        except SubmitError:
            limit = DEFAULT_MAX_ARRAY_SIZE
        return plan_sweep(sweep, configs, job_folder(root), limit)

    def checks(self, plan: SweepPlan, dry_run: bool = False):
        return sweep_checks(plan, dry_run)

    def submit(self, plan: SweepPlan, backend=None) -> "SweepJob":
        return submit_sweep(plan, backend)


class SweepJob:
    """The handle of a submitted sweep: one SlurmJob per task (iterate, index, len), the array ids, wait/cancel."""

    def __init__(self, root: Path, array_ids: list[str], tasks: list[SlurmJob]) -> None:
        self.root, self.array_ids, self.tasks = Path(root), list(array_ids), list(tasks)

    @property
    def job_id(self) -> str:
        return self.array_ids[0]

    def __iter__(self) -> Iterator[SlurmJob]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> SlurmJob:
        return self.tasks[index]

    def wait(self, timeout_s: Optional[float] = None) -> list:
        """Every task's TrainingResult, in task order (a failed task raises its TrainingError)."""
        return [task.wait(timeout_s) for task in self.tasks]

    def cancel(self) -> None:
        """Every array, and every task's resubmit chain (where the site forbids requeue)."""
        cancel_sweep(self.array_ids, [(task.job_id, task.ckpt_output_dir) for task in self.tasks])

    def __repr__(self) -> str:
        return f"SweepJob(arrays={self.array_ids}, tasks={len(self.tasks)}, root={str(self.root)!r})"


def check_dirs_free(plan: SweepPlan) -> None:
    """No task folder may be in use by a running or queued job (nothing is queued otherwise)."""
    for _, config in plan.task_configs:
        ckpt = Path(config.ckpt_output_dir).resolve()
        ckpt_lock.check_free(ckpt, error=SubmitError)
        waiting = client.queued_for(str(ckpt))
        if waiting:
            raise SubmitError(ckpt_lock.in_use(ckpt, f"Slurm job {waiting[0]} (queued)") + "; nothing was queued",
                              ckpt_lock.IN_USE_FIX)


def submit_sweep(plan: SweepPlan, backend=None) -> SweepJob:
    """Queue every array (each after the one it waits for); if one is refused, cancel those already queued."""
    problem = slurm_check.client_problem()
    if problem is not None:
        raise SubmitError(f"{problem}. Nothing was queued")
    check_dirs_free(plan)
    if backend is not None:
        for _, config in plan.task_configs:
            backend.check_values(config)
    array_ids: list[str] = []
    handles: list[tuple[SweepTask, Any, SlurmJob]] = []
    try:
        with removed_on_failure(plan.folder), without_outer_job():
            for array in plan.arrays:
                after = array_ids[array.after] if array.after is not None else None
                submitted = _submit_array(array, plan.folder, after)
                array_ids.append(submitted[0].job_id.split("_")[0])
                handles += [(task, config, job) for (task, config), job in zip(array.tasks, submitted)]
    except Exception as exc:
        for array_id in array_ids:
            with contextlib.suppress(SubmitError):
                client.cancel(array_id)
        if isinstance(exc, SubmitError):
            raise
        raise SubmitError(f"sbatch refused the sweep: {exc}. Nothing was queued (arrays already queued "
                          f"were cancelled: {', '.join(array_ids) or 'none'})",
                          "check the [slurm] options (partition, nodes, time)") from None
    return record_sweep(plan, array_ids, handles)


def _submit_array(array: ArrayPlan, folder: Path, after: Optional[str]) -> list[SlurmJob]:
    import submitit

    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=array.shared.config.slurm.max_requeues)
    executor.update_parameters(**array.parameters(after))
    with executor.batch():
        pending = [executor.submit(NodeTask(config, successor=submit_successor)) for _, config in array.tasks]
    return [SlurmJob(job.job_id, folder / job.job_id, config.slurm.nodes, Path(config.ckpt_output_dir))
            for job, (_, config) in zip(pending, array.tasks)]


def record_sweep(plan: SweepPlan, array_ids: list[str], handles) -> SweepJob:
    """sweep.json in the sweep's folder, a job record per task, and the sweep's record under its first array id."""
    tasks = [{"index": task.index, "name": task.name, "values": dict(task.values), "job_id": job.job_id,
              "dir": str(Path(config.ckpt_output_dir).resolve())} for task, config, job in handles]
    for (_, _, job), row in zip(handles, tasks):
        jobs.record(job.job_id, job.folder, job.nodes, row["dir"])
    body = {"arrays": array_ids, "keys": list(plan.sweep.keys), "max_parallel": plan.sweep.max_parallel,
            "tasks": tasks}
    plan.root.mkdir(parents=True, exist_ok=True)
    (plan.root / SWEEP_FILE).write_text(json.dumps(body, indent=1))
    jobs.write({"job_id": array_ids[0], "executor": "slurm", "kind": "sweep", "folder": str(plan.folder),
                "nodes": max(job.nodes for _, _, job in handles), "ckpt_output_dir": str(plan.root.resolve()),
                "submitted": time.time(), **body})
    return SweepJob(plan.root, array_ids, [job for _, _, job in handles])
