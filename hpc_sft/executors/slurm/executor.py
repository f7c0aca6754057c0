"""The Slurm executor: a pure plan (sbatch script, per-node launch) and a submitit submission."""
from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ... import jobs, registry
from ...errors import ConfigError, SubmitError
from ...rundir import lock as ckpt_lock
from ...rundir.status import chain_of
from .. import Checks, JobState
from . import check as slurm_check
from . import client
from .env import PORT_BASE, PORT_SPAN, without_outer_job
from .job import SlurmJob, cancel_run, cancel_sweep, current_job, node_log_name
from .node_task import NodeTask


def job_folder(config) -> Path:
    """Where submitit keeps job files and logs: slurm.folder or {ckpt_output_dir}/slurm."""
    return Path(config.slurm.folder or Path(config.ckpt_output_dir) / "slurm").expanduser().resolve()


def sbatch_parameters(config) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (sbatch options) for this config. Pure."""
    opts = config.slurm
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(config.ckpt_output_dir).name)[:40]
    params: dict[str, Any] = {
        "job_name": f"hpc-sft-{name}", "nodes": opts.nodes, "ntasks_per_node": 1,
        "time": opts.timeout_min, "signal_delay_s": opts.signal_lead_s, "stderr_to_stdout": False,
        "setup": list(opts.setup), "additional_parameters": {"requeue": True, **opts.additional},
    }
    optional = {"partition": opts.partition, "account": opts.account, "qos": opts.qos,
                "constraint": opts.constraint, "cpus_per_task": opts.cpus_per_task, "mem": opts.mem,
                "gpus_per_node": opts.gpus_per_node or None, "exclusive": opts.exclusive or None}
    params.update({k: v for k, v in optional.items() if v is not None})
    if opts.container is not None:  # after the user's setup, which may load the runtime
        from ...container import check_lines

        params["setup"] += check_lines(opts.container)
    return params


@dataclass(frozen=True)
class SlurmPlan:
    """Everything that would be submitted; nothing here touches Slurm."""

    config: Any
    folder: Path
    parameters: dict

    @property
    def python(self) -> str:
        return sys.executable

    def sbatch_script(self) -> str:
        """The exact script submitit submits (the job folder's %j is filled in by Slurm)."""
        from submitit.slurm.slurm import _make_sbatch_string

        command = " ".join([shlex.quote(self.python), "-u -m submitit.core._submit", shlex.quote(str(self.folder / "%j"))])
        return _make_sbatch_string(command=command, folder=self.folder / "%j", **self.parameters)

    def node_plan(self) -> list[dict]:
        """What each node will derive once the allocation exists."""
        cfg = self.config
        nproc = cfg.nproc_per_node or ("GPUs visible on the node" if self.config.device != "cpu" else 1)
        return [{"node_rank": rank, "nnodes": cfg.slurm.nodes, "rdzv_id": "$SLURM_JOB_ID",
                 "rdzv_endpoint": f"<first host of $SLURM_JOB_NODELIST>:{PORT_BASE}+($SLURM_JOB_ID % {PORT_SPAN})",
                 "nproc_per_node": nproc, "device": cfg.device or "auto (cuda if visible)"}
                for rank in range(cfg.slurm.nodes)]

    def describe(self) -> str:
        """The dry run's text: the exact sbatch script and the per-node launch plan."""
        lines = ["# sbatch script (submitted through submitit; %j is the job id)", self.sbatch_script(),
                 "# per-node launch plan (each node derives this from its SLURM_* environment)"]
        lines += [json.dumps(node) for node in self.node_plan()]
        return "\n".join(lines + [f"# container: {line}" for line in self.container_lines()])

    def container_lines(self) -> list[str]:
        """slurm.container: how each node wraps its training processes (none without a container)."""
        from ...container import describe
        from ...launch import launch_container

        wanted = launch_container(self.config)
        return [] if wanted is None else describe(wanted, (), self.python)


CLUSTER_CHECK = "cluster: partition, node count, MaxTime, GraceTime vs measured save"
TEST_ONLY = "sbatch --test-only with the rendered options"


def preflight(plan: SlurmPlan, dry_run: bool = False) -> Checks:
    """Checks against the reachable cluster before queueing; ConfigError for what it would refuse. When Slurm
    cannot be reached a dry run says so, a submission raises SubmitError."""
    problem = slurm_check.client_problem()
    if problem is not None:
        if not dry_run:
            raise SubmitError(f"{problem}. Nothing was queued")
        return Checks(not_run=((CLUSTER_CHECK, problem), (TEST_ONLY, problem)))
    backend = registry.backend_class(plan.config.backend)
    save_s, state_bytes = backend.measured_save(Path(plan.config.ckpt_output_dir))
    warnings = slurm_check.check_cluster(plan.config.slurm, save_s)
    warnings += slurm_check.disk_warnings(plan.config.ckpt_output_dir, state_bytes, plan.config.keep_full_states)
    slurm_check.test_only(plan.sbatch_script(), plan.config.slurm.additional)
    return Checks(ran=(CLUSTER_CHECK, TEST_ONLY), warnings=tuple(warnings))


def sweep_jobs(rec: dict) -> tuple[list[str], dict[str, Path]]:
    """A recorded sweep's jobs: its arrays, then the later jobs of any task resubmitted where the site forbids
    requeue; and the run directory of each array task and later job."""
    dirs = {task["job_id"]: Path(task["dir"]) for task in rec["tasks"]}
    later = {job: folder for task, folder in dirs.items() for job in chain_of(folder, task)[1:]}
    return [*(rec.get("arrays") or [rec["job_id"]]), *later], {**dirs, **later}


class SlurmExecutor:
    name = "slurm"

    def job_state(self, rec: dict) -> JobState:
        """The run's state now: its job's, or, where the site forbids requeue, its chain's newest job's."""
        chain = chain_of(Path(rec["ckpt_output_dir"]), rec["job_id"]) if rec.get("ckpt_output_dir") else [rec["job_id"]]
        now = client.slurm_state(chain[-1])
        restarts = (now["restarts"] or 0) + len(chain) - 1 if len(chain) > 1 else now["restarts"]
        head = f"job {rec['job_id']}" + (f" -> chain of {len(chain)} jobs, now job {chain[-1]}" if len(chain) > 1 else "")
        extra = {"chain": chain} if len(chain) > 1 else {}
        return JobState(now["state"], now["state"] in client.LIVE_STATES,
                        f"{head}: {now['state']}  (restarts: {restarts}, elapsed {now['elapsed']})",
                        str(Path(rec["folder"]).parent / chain[-1]) if len(chain) > 1 else rec["folder"],
                        restarts, now["elapsed"], extra)

    def accounting(self, rec: dict) -> dict:
        """GPU- or CPU-hours used and lost to interruptions, from sacct (`hpc-sft status`; never raises)."""
        from . import accounting

        if rec.get("tasks"):  # a sweep: every array, each task's attempts matched with its own run directory
            ids, dirs = sweep_jobs(rec)
            return accounting.status_block(ids, lambda task: dirs[task])
        ckpt = Path(rec["ckpt_output_dir"])  # a resubmit chain: every job of it
        return accounting.status_block(chain_of(ckpt, rec["job_id"]), lambda _task: ckpt)

    def cancel(self, rec: dict) -> str:
        if rec.get("arrays"):  # a sweep: every job array of it, and any task's resubmit chain
            ids = cancel_sweep(rec["arrays"], [(t["job_id"], Path(t["dir"])) for t in rec.get("tasks", [])])
        else:  # the job, and every job of its resubmit chain
            ids = cancel_run(rec["job_id"], Path(rec["ckpt_output_dir"]) if rec.get("ckpt_output_dir") else None)
        what = (f"sweep {rec['job_id']} (job arrays {', '.join(ids)})" if rec.get("arrays") else
                f"job {ids[0]}" + (f" and the jobs continuing it ({', '.join(ids[1:])})" if len(ids) > 1 else ""))
        return f"cancelled {what}; checkpoints stay in {rec['ckpt_output_dir']}"

    def log_path(self, rec: dict, node: int, stderr: bool) -> Path:
        if rec.get("tasks"):
            first = rec["tasks"][0]["job_id"]
            raise ConfigError("JOB", f"{rec['job_id']} is a sweep of {len(rec['tasks'])} tasks, each with its own "
                              "logs", f"pass one task's id, e.g. `hpc-sft logs {first}` (`hpc-sft status "
                              f"{rec['job_id']}` lists them)")
        current = current_job(rec["job_id"], Path(rec["ckpt_output_dir"]) if rec.get("ckpt_output_dir") else None)
        return Path(rec["folder"]).parent / current / node_log_name(current, node, stderr)

    def plan(self, config) -> SlurmPlan:
        return SlurmPlan(config, job_folder(config), sbatch_parameters(config))

    def submit(self, plan: SlurmPlan, backend=None) -> SlurmJob:
        problem = slurm_check.client_problem()
        if problem is not None:
            raise SubmitError(f"{problem}. Nothing was queued")
        ckpt = Path(plan.config.ckpt_output_dir).resolve()
        ckpt_lock.check_free(ckpt, error=SubmitError)
        waiting = client.queued_for(str(ckpt))
        if waiting:
            raise SubmitError(ckpt_lock.in_use(ckpt, f"Slurm job {waiting[0]} (queued)") + "; nothing was queued",
                              ckpt_lock.IN_USE_FIX)
        if backend is not None:
            backend.check_values(plan.config)
        with removed_on_failure(plan.folder), without_outer_job():
            job = queue(plan.folder, plan.config, plan.parameters, NodeTask(plan.config, successor=submit_successor))
        handle = SlurmJob.from_submitit(job, plan)
        handle.requeue_allowed = client.can_requeue(handle.job_id)
        jobs.record(handle.job_id, handle.folder, handle.nodes, str(ckpt))
        return handle


def queue(folder: Path, config, parameters: dict, task) -> Any:
    """sbatch through submitit: the submitit job, or SubmitError with what Slurm refused."""
    import submitit

    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=config.slurm.max_requeues)
    executor.update_parameters(**parameters)
    try:
        return executor.submit(task)
    except Exception as exc:  # sbatch's own message says what Slurm refused
        raise SubmitError(f"sbatch refused the job: {_one_line(exc)}. Nothing was queued",
                          "check the [slurm] options (partition, nodes, time)") from None


def submit_successor(config, chain: tuple[str, ...], exclude: tuple[str, ...] = ()) -> str:
    """Node 0 of a job the site will not requeue: queue the run's next job (the same options, starting once
    this one has ended, without the hosts a hang was pinned on); its id. Runs inside the job."""
    plan = SlurmExecutor().plan(config)
    extra = {"dependency": f"afterany:{chain[-1]}", **({"exclude": ",".join(exclude)} if exclude else {})}
    params = {**plan.parameters, "additional_parameters": {**plan.parameters["additional_parameters"], **extra}}
    with without_outer_job():
        return queue(plan.folder, config, params, NodeTask(config, chain=chain, successor=submit_successor)).job_id


def _one_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[-3:]) or type(exc).__name__


@contextlib.contextmanager
def removed_on_failure(folder: Path) -> Iterator[None]:
    """When the block fails, remove the entries it created in `folder` (submitit's .submission_file_*.sh and
    pickle) and the folders it created on the way there; what was there before stays."""
    folder = Path(folder)
    new_dirs = [p for p in (folder, *folder.parents) if not p.exists()]
    before = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        yield
    except Exception:
        for path in (set(folder.iterdir()) - before if folder.is_dir() else ()):
            _remove(path)
        for path in new_dirs:  # deepest first; a folder someone else filled meanwhile stays
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
