"""The Slurm executor: a pure plan (sbatch script, per-node launch) and a submitit submission."""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import ckpt_lock, jobs
from ..errors import SubmitError, TrainingError
from ..node_task import NodeTask
from ..slurm_env import PORT_BASE, PORT_SPAN
from .slurm_job import SlurmJob


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


class SlurmExecutor:
    name = "slurm"

    def plan(self, config) -> SlurmPlan:
        return SlurmPlan(config, job_folder(config), sbatch_parameters(config))

    def submit(self, plan: SlurmPlan, backend=None) -> SlurmJob:
        import submitit

        ckpt = Path(plan.config.ckpt_output_dir).resolve()
        ckpt_lock.check_free(ckpt)
        waiting = jobs.queued_for(str(ckpt))
        if waiting:
            raise TrainingError(f"ckpt_output_dir {ckpt} is in use by Slurm job {waiting[0]} (queued). Fix: wait for "
                                "it, cancel it, or choose another ckpt_output_dir")
        if backend is not None:
            backend.check_values(plan.config)
        executor = submitit.SlurmExecutor(folder=plan.folder / "%j", max_num_timeout=plan.config.slurm.max_requeues)
        executor.update_parameters(**plan.parameters)
        try:
            job = executor.submit(NodeTask(plan.config))
        except Exception as exc:  # sbatch's own message says what Slurm refused
            raise SubmitError(f"sbatch refused the job: {exc}. Nothing was queued. "
                              "Fix: check the [slurm] options (partition, nodes, time)") from None
        handle = SlurmJob.from_submitit(job, plan)
        jobs.record(handle.job_id, handle.folder, handle.nodes, str(ckpt))
        return handle
