"""TRL adapter: the backend class (the pure config mapping: mapping; training: train).

Importing this module imports neither trl, transformers, datasets nor torch (login nodes stay light).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from ...errors import ConfigError, TrainingError
from ..base import Backend
from .mapping import (ALIASES, LORA_FIELDS, SAME_NAME, SFTCONFIG_FIELDS, check_lora, check_tracking, lora_args, map_args,
                      static_launch)


def require_packages(names) -> None:
    """ConfigError naming the extra to install when a package this backend needs is missing."""
    import importlib.util

    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError("backend", f"'trl' needs {', '.join(missing)}, which is not installed here",
                          "pip install 'hpc-sft[trl]'")


class TRLSFTBackend(Backend):
    """SFT with TRL's SFTTrainer (imported only when training runs)."""

    name = "trl"
    kwarg_fields = (SFTCONFIG_FIELDS - set(ALIASES) - SAME_NAME) | set(LORA_FIELDS)
    free_kwargs = frozenset({
        "logging_steps", "logging_strategy", "logging_first_step", "report_to", "run_name", "project",
        "log_level", "log_level_replica", "disable_tqdm", "dataloader_num_workers", "dataset_num_proc",
        "save_total_limit", "save_on_each_node", "skip_memory_metrics", "dataloader_persistent_workers",
        "dataloader_prefetch_factor", "dataloader_pin_memory"})
    required = {"effective_batch_size": 128, "learning_rate": 1e-5, "max_seq_len": 4096}
    aliases = ALIASES
    trackers = ("tensorboard", "wandb")  # report_to: transformers' TensorBoardCallback, WandbCallback

    def __init__(self, callbacks: tuple = ()) -> None:
        #: extra transformers TrainerCallbacks (in-process runs only; tests use them to stop early)
        self.callbacks = tuple(callbacks)

    @classmethod
    def check_static(cls, config) -> None:
        """What trl cannot do, impossible batch arithmetic and bad LoRA values; pure (dry runs too)."""
        super().check_static(config)
        check_tracking(config)
        if config.is_pretraining:
            raise ConfigError("is_pretraining", "is not supported by the trl backend",
                              "use backend='instructlab-training' for pretraining, or drop is_pretraining")
        map_args(config, static_launch(config))  # ConfigError for impossible batch arithmetic
        check_lora(config.backend_kwargs)

    def check_values(self, config) -> None:
        """Build the real SFTConfig (and LoraConfig) once, so a bad value fails before any work starts."""
        self.check_static(config)
        require_packages(("trl", "peft") if lora_args(config) is not None else ("trl",))
        super().check_values(config)
        launch = static_launch(config)
        from trl import SFTConfig

        try:
            SFTConfig(**map_args(config, launch))
        except Exception as exc:  # ValueError/TypeError/KeyError from TrainingArguments.__post_init__
            raise ConfigError(_guilty_key(config, launch), f"rejected by trl.SFTConfig: {exc}",
                              "see the trl SFTConfig reference") from None
        lora = lora_args(config)
        if lora is not None:
            from peft import LoraConfig

            try:
                LoraConfig(**lora)
            except Exception as exc:
                raise ConfigError("lora_r", f"rejected by peft.LoraConfig: {exc}",
                                  "check lora_r, lora_alpha, lora_dropout, lora_target_modules") from None

    def local_processes(self, launch) -> int:
        """torchrun workers, except for one process on one node: that trains here."""
        nproc = super().local_processes(launch)
        return 0 if nproc == 1 and launch.nnodes == 1 and launch.container is None else nproc

    def execute_training(self, config, launch) -> None:
        nproc = super().local_processes(launch)
        if nproc == 1 and launch.nnodes == 1 and launch.container is None:  # a container: torchrun in the image
            from .train import train

            try:
                train(config, dataclasses.replace(launch, nproc_per_node=1), self.callbacks)
            except (ConfigError, TrainingError):
                raise
            except Exception as exc:
                raise TrainingError(f"trl SFTTrainer failed: {type(exc).__name__}: {exc}") from exc
            return
        from .launch import run_torchrun

        run_torchrun(config, dataclasses.replace(launch, nproc_per_node=nproc))

    @classmethod
    def newest_checkpoint(cls, ckpt_dir):
        """The newest checkpoint-N (the trl backend's final model appears in hf_format/ only at the end)."""
        from .checkpoints import checkpoints

        found = checkpoints(ckpt_dir)
        return found[0][1] if found else None

    @classmethod
    def measured_save(cls, ckpt_dir: Path) -> tuple[Optional[float], Optional[int]]:
        """Longest save and largest size recorded in the completeness markers of the checkpoint-N kept."""
        from .checkpoints import measured_save

        return measured_save(ckpt_dir)

    def progress(self, config):
        from .checkpoints import progress

        return progress(config.ckpt_output_dir, config.effective_batch_size, config.num_epochs or 1)

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("trl")


def _guilty_key(config, launch) -> str:
    """The backend kwarg whose value SFTConfig rejects alone (else 'backend_kwargs')."""
    from trl import SFTConfig

    base = dataclasses.replace(config, backend_kwargs={})
    for key, value in config.backend_kwargs.items():
        if key in LORA_FIELDS:
            continue
        try:
            SFTConfig(**{**map_args(base, launch), key: value})
        except Exception:
            return key
    return "backend_kwargs"
