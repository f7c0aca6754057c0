"""The compute side of the trl backend: one SFTTrainer run (in-process or as a torchrun worker) that
resumes from the newest complete checkpoint-N, saves and stops on a warning signal, and writes the final model."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from ... import signals, tracking
from ..._worker.hpc_sft_shim import beats, faults, saves
from ..._worker.hpc_sft_shim.resume import barrier
from ...rundir.layout import HF_FORMAT, METRICS_FILE
from .checkpoints import checkpoint_problem, checkpoints, drop_marker, latest_complete_checkpoint, mark_complete

log = logging.getLogger("hpc_sft.trl")
STOP_FILE_ENV = "HPC_SFT_TRL_STOP_FILE"  # the node's parent creates it when Slurm's warning signal arrives


def stop_requested() -> bool:
    """This process caught a warning signal, or its node's training parent wrote the stop file."""
    if signals.received() is not None:
        return True
    path = os.environ.get(STOP_FILE_ENV)
    return bool(path) and os.path.exists(path)


def agreed(flags: tuple[bool, ...], device) -> tuple[bool, ...]:
    """Each flag True on every rank when any rank says True (all ranks act after the same step): one vote."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tuple(flags)
    import torch

    vote = torch.tensor([1 if flag else 0 for flag in flags], device=device)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in vote.tolist())


def checkpoint_dir(args, state) -> Path:
    return Path(args.output_dir) / f"checkpoint-{state.global_step}"


class CallbackHooks:
    """The hooks of hpc-sft's TrainerCallback (kept free of transformers: hpc_sft_callback adds the base)."""

    def __init__(self, config) -> None:
        self.config, self.stopping = config, False
        self.metrics = Path(config.ckpt_output_dir) / METRICS_FILE
        self.clock = saves.Clock(float(config.full_state_every_min or 0) * 60)
        self.save_started: Optional[float] = None

    def on_train_begin(self, args, state, control, **kwargs):
        beats.arm_stack_dumps()
        if state.is_world_process_zero and not self.metrics.is_file():
            head = {"backend": "trl", "num_epochs": self.config.num_epochs or 1,
                    "effective_batch_size": self.config.effective_batch_size, "max_steps": state.max_steps}
            self.metrics.write_text(json.dumps(head) + "\n")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.metrics, "a") as fh:
                fh.write(json.dumps(self.metrics_row(state, logs)) + "\n")

    def metrics_row(self, state, logs: dict) -> dict:
        row = {"step": state.global_step, "epoch": state.epoch, "timestamp": datetime.now().isoformat(), **logs}
        if "loss" in logs:  # a training step (not the end-of-run summary): what `hpc-sft status` reads
            batch, epochs = self.config.effective_batch_size, self.config.num_epochs or 1
            row.update(samples_seen=state.global_step * batch, batch_size=batch, avg_loss=logs["loss"],
                       total_samples=state.max_steps * batch // epochs)  # per epoch
        return row

    def on_step_end(self, args, state, control, **kwargs):
        faults.pause("STEP_DELAY")
        beats.beat("step", state.global_step)
        stop, due = agreed((stop_requested(), self.clock.due() and state.is_world_process_zero), args.device)
        if stop and not self.stopping:
            self.stopping = True
            if state.is_world_process_zero:
                log.warning(f"trl: warning signal; saving checkpoint-{state.global_step} and stopping")
            control.should_save = True
            control.should_training_stop = True
        elif due and not self.stopping:
            if state.is_world_process_zero:
                log.warning(f"trl: periodic save of checkpoint-{state.global_step} (full_state_every_min)")
            control.should_save = True
        if control.should_save:
            self.saving(args, state)
        return control

    def saving(self, args, state) -> None:
        """A checkpoint-N save starts: it is torn until on_save marks it."""
        beats.beat("saving")
        self.save_started = time.monotonic()
        if state.is_world_process_zero:
            drop_marker(checkpoint_dir(args, state))

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stopping:
            control.should_save = False  # saved at this step already
        elif control.should_save:
            self.saving(args, state)
        return control

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank's files (rng_state_R.pth) are on disk
        beats.beat("saved")
        if state.is_world_process_zero:
            if self.stopping:
                faults.pause("PAUSE_STOP_SAVE", "holding the stop save open")
            mark_complete(checkpoint_dir(args, state), state.global_step,
                          round(time.monotonic() - self.save_started, 3) if self.save_started else None)
            saves.prune([p for _, p in checkpoints(args.output_dir)], int(self.config.keep_full_states or 0),
                        checkpoint_problem, log.warning)
        self.clock.saved()
        return control


def hpc_sft_callback(config):
    """A TrainerCallback for metrics, stop-on-signal and the checkpoint completeness marker. Put it last
    in the callback list so that it sees every other callback's save request."""
    from transformers import TrainerCallback

    return type("HpcSftCallback", (CallbackHooks, TrainerCallback), {})(config)


def tracking_env(config) -> dict[str, str]:
    """tracking.env plus transformers' TensorBoardCallback folder: the run's one TensorBoard folder."""
    tracking.check_installed(config.tracking)
    env = tracking.env(config.tracking, config.ckpt_output_dir)
    if "tensorboard" in tracking.trackers(config.tracking) and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
        env["TENSORBOARD_LOGGING_DIR"] = str(tracking.tensorboard_dir(config.ckpt_output_dir))
    return env


def continue_tensorboard(trainer, resume: Optional[Path]) -> None:
    """Resuming from checkpoint-N: the TensorBoard writer purges steps > N a crash left behind (they are
    trained again now) instead of doubling them; the steps themselves go on from N (trainer state)."""
    from transformers.integrations import TensorBoardCallback

    if resume is None or not trainer.is_world_process_zero():
        return
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.tb_writer is None and callback.logging_dir:
            step = int(resume.name.rsplit("-", 1)[1])
            callback.tb_writer = callback._SummaryWriter(log_dir=callback.logging_dir, purge_step=step + 1)


def finish_wandb(run_id: Optional[str]) -> None:
    """End this run's W&B run in this process (its offline files complete; a later start resumes it)."""
    import sys

    wandb = sys.modules.get("wandb")
    if run_id and wandb is not None and wandb.run is not None and wandb.run.id == run_id:
        wandb.finish()


def train(config, launch, callbacks=()) -> None:
    """One SFTTrainer run in this process (also each torchrun worker's body), with the trackers of
    config.tracking continuing the run's one TensorBoard folder and W&B run."""
    env = tracking_env(config)
    with tracking.environment(env):
        try:
            train_here(config, launch, callbacks)
        finally:
            if "wandb" in tracking.trackers(config.tracking):
                finish_wandb(os.environ.get("WANDB_RUN_ID"))


def train_here(config, launch, callbacks=()) -> None:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from .mapping import lora_args, map_args

    args = SFTConfig(**map_args(config, launch))
    tokenizer = AutoTokenizer.from_pretrained(config.model_path)
    dataset = load_dataset("json", data_files=str(config.data_path), split="train")
    peft_config = None
    lora = lora_args(config)
    if lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**lora)
    trainer = SFTTrainer(model=str(config.model_path), args=args, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[*callbacks, hpc_sft_callback(config)])
    resume = latest_complete_checkpoint(args.output_dir)
    if resume is not None and trainer.is_world_process_zero():
        log.warning(f"trl: resuming from {resume}")
    continue_tensorboard(trainer, resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    if trainer.state.global_step >= trainer.state.max_steps:
        save_final(trainer, config, lora is not None)


def save_final(trainer, config, merged_lora: bool) -> Path:
    """Write {ckpt}/hf_format/samples_N (N = global_step x effective batch) atomically."""
    samples = trainer.state.global_step * config.effective_batch_size
    root = Path(config.ckpt_output_dir) / HF_FORMAT
    final, tmp = root / f"samples_{samples}", root / f".samples_{samples}.tmp"
    if not merged_lora:
        trainer.save_model(str(tmp))  # collective under DDP/FSDP: every rank calls it
    if trainer.is_world_process_zero():
        if merged_lora:
            model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            model.save_pretrained(str(tmp))
            trainer.processing_class.save_pretrained(str(tmp))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    return final
