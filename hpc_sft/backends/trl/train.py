"""The compute side of the trl backend: one SFTTrainer run (in-process or as a torchrun worker) that
resumes from the newest complete checkpoint-N, saves and stops on a warning signal, and writes the final model."""
from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import datetime
from pathlib import Path

from ... import signals
from ..._worker.hpc_sft_shim import beats, faults
from ..._worker.hpc_sft_shim.resume import barrier
from ...rundir.layout import HF_FORMAT, METRICS_FILE
from .checkpoints import drop_marker, latest_complete_checkpoint, mark_complete

log = logging.getLogger("hpc_sft.trl")
STOP_FILE_ENV = "HPC_SFT_TRL_STOP_FILE"  # the node's parent creates it when Slurm's warning signal arrives


def stop_requested() -> bool:
    """This process caught a warning signal, or its node's training parent wrote the stop file."""
    if signals.received() is not None:
        return True
    path = os.environ.get(STOP_FILE_ENV)
    return bool(path) and os.path.exists(path)


def agreed(flag: bool, device) -> bool:
    """True on every rank when any rank says True (all ranks must stop after the same step)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    vote = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return bool(vote.item())


def checkpoint_dir(args, state) -> Path:
    return Path(args.output_dir) / f"checkpoint-{state.global_step}"


class CallbackHooks:
    """The hooks of hpc-sft's TrainerCallback (kept free of transformers: hpc_sft_callback adds the base)."""

    def __init__(self, config) -> None:
        self.config, self.stopping = config, False
        self.metrics = Path(config.ckpt_output_dir) / METRICS_FILE

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
        if not self.stopping and agreed(stop_requested(), args.device):
            self.stopping = True
            if state.is_world_process_zero:
                log.warning(f"trl: warning signal; saving checkpoint-{state.global_step} and stopping")
            control.should_save = True
            control.should_training_stop = True
        if control.should_save:
            beats.beat("saving")
            if state.is_world_process_zero:
                drop_marker(checkpoint_dir(args, state))
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stopping:
            control.should_save = False  # saved at this step already
        elif control.should_save:
            beats.beat("saving")
            if state.is_world_process_zero:
                drop_marker(checkpoint_dir(args, state))
        return control

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank's files (rng_state_R.pth) are on disk
        beats.beat("saved")
        if state.is_world_process_zero:
            if self.stopping:
                faults.pause("PAUSE_STOP_SAVE", "holding the stop save open")
            mark_complete(checkpoint_dir(args, state), state.global_step)
        return control


def hpc_sft_callback(config):
    """A TrainerCallback for metrics, stop-on-signal and the checkpoint completeness marker. Put it last
    in the callback list so that it sees every other callback's save request."""
    from transformers import TrainerCallback

    return type("HpcSftCallback", (CallbackHooks, TrainerCallback), {})(config)


def train(config, launch, callbacks=()) -> None:
    """One SFTTrainer run in this process (also each torchrun worker's body)."""
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
