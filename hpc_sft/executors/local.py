"""The local executor: run the backend on this machine, now, and return a TrainingResult."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .. import ckpt_lock
from ..checkpoints import result_from_disk
from ..launch import Launch, finalize, local_launch
from ..result import TrainingResult


@dataclass(frozen=True)
class LocalPlan:
    config: object
    launch: Launch

    def describe(self) -> str:
        lch = self.launch
        return (f"local run: {lch.nnodes} node(s), this is node {lch.node_rank}, "
                f"{lch.nproc_per_node} process(es) on {lch.device}, checkpoints in {self.config.ckpt_output_dir}")


log = logging.getLogger("hpc_sft.local")


class LocalExecutor:
    name = "local"

    def plan(self, config) -> LocalPlan:
        return LocalPlan(config, local_launch(config))

    def submit(self, plan: LocalPlan, backend) -> TrainingResult:
        backend.check_values(plan.config)
        launch = finalize(plan.launch)
        ckpt = Path(plan.config.ckpt_output_dir)
        ckpt_lock.acquire(ckpt, None)
        try:
            backend.tidy_checkpoints(ckpt, log.warning)
            backend.execute_training(plan.config, launch)
        finally:
            ckpt_lock.release(ckpt)
        return result_from_disk(ckpt)
