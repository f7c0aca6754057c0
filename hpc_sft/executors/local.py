"""The local executor: run the backend on this machine, now, and return a TrainingResult."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


class LocalExecutor:
    name = "local"

    def plan(self, config) -> LocalPlan:
        return LocalPlan(config, local_launch(config))

    def submit(self, plan: LocalPlan, backend) -> TrainingResult:
        backend.check_values(plan.config)
        launch = finalize(plan.launch)
        Path(plan.config.ckpt_output_dir).mkdir(parents=True, exist_ok=True)
        backend.execute_training(plan.config, launch)
        return result_from_disk(plan.config.ckpt_output_dir)
