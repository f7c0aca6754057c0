"""The trl backend's pure mapping of our config to trl.SFTConfig / peft.LoraConfig kwargs, and its checks.

Pure and light: imports neither trl, peft, transformers nor torch (login nodes, dry runs and the workers use it).
"""
from __future__ import annotations

from typing import Any, Optional

from ...errors import ConfigError
from ...launch import Launch
from ...tracking import trackers

# trl.SFTConfig init fields of trl 1.16.0 (a test compares this with the real class).
SFTCONFIG_FIELDS = frozenset({
    "accelerator_config", "activation_checkpointing", "activation_checkpointing_kwargs", "activation_offloading",
    "adam_beta1", "adam_beta2", "adam_epsilon", "assistant_only_loss", "auto_find_batch_size",
    "average_tokens_across_devices", "batch_eval_metrics", "bf16", "bf16_full_eval", "chat_template_path",
    "completion_only_loss", "data_seed", "dataloader_drop_last", "dataloader_in_order",
    "dataloader_multiprocessing_context", "dataloader_num_workers", "dataloader_persistent_workers",
    "dataloader_pin_memory", "dataloader_prefetch_factor", "dataset_kwargs", "dataset_num_proc",
    "dataset_text_field", "ddp_backend", "ddp_broadcast_buffers", "ddp_bucket_cap_mb",
    "ddp_find_unused_parameters", "ddp_static_graph", "ddp_timeout", "debug", "deepspeed", "disable_tqdm",
    "do_eval", "do_predict", "do_train", "enable_jit_checkpoint", "eos_token", "eval_accumulation_steps",
    "eval_delay", "eval_do_concat_batches", "eval_on_start", "eval_packing", "eval_steps", "eval_strategy",
    "eval_use_gather_object", "fp16", "fp16_full_eval", "fsdp", "fsdp_config", "full_determinism",
    "gradient_accumulation_steps", "gradient_checkpointing", "gradient_checkpointing_kwargs",
    "greater_is_better", "hub_always_push", "hub_model_id", "hub_private_repo", "hub_revision", "hub_strategy",
    "hub_token", "ignore_data_skip", "include_for_metrics", "include_num_input_tokens_seen", "label_names",
    "label_smoothing_factor", "learning_rate", "length_column_name", "liger_kernel_config",
    "load_best_model_at_end", "local_rank", "log_level", "log_level_replica", "log_on_each_node",
    "logging_first_step", "logging_nan_inf_filter", "logging_steps", "logging_strategy", "loss_type",
    "lr_scheduler_kwargs", "lr_scheduler_type", "max_grad_norm", "max_length", "max_steps",
    "metric_for_best_model", "model_init_kwargs", "neftune_noise_alpha", "num_train_epochs", "optim",
    "optim_args", "optim_target_modules", "output_dir", "packing", "packing_strategy", "pad_to_multiple_of",
    "pad_token", "padding_free", "parallelism_config", "per_device_eval_batch_size",
    "per_device_train_batch_size", "prediction_loss_only", "project", "push_to_hub", "remove_unused_columns",
    "report_to", "restore_callback_states_from_checkpoint", "resume_from_checkpoint", "router_aux_loss_coef",
    "run_name", "save_on_each_node", "save_only_model", "save_steps", "save_strategy", "save_total_limit",
    "seed", "shuffle_dataset", "skip_memory_metrics", "tf32", "torch_compile", "torch_compile_backend",
    "torch_compile_mode", "torch_empty_cache_steps", "trackio_bucket_id", "trackio_space_id",
    "trackio_static_space_id", "train_sampling_strategy", "truncation_mode", "trust_remote_code", "use_cache",
    "use_cpu", "use_liger_kernel", "warmup_steps", "weight_decay",
})
# SFTConfig field -> the sft() parameter that sets it (passing the field itself is an error saying so)
ALIASES = {
    "num_train_epochs": "num_epochs",
    "max_length": "max_seq_len",
    "output_dir": "ckpt_output_dir",
    "per_device_train_batch_size": "effective_batch_size (with max_tokens_per_gpu)",
    "gradient_accumulation_steps": "effective_batch_size (with max_tokens_per_gpu)",
    "save_steps": "save_samples",
    "save_strategy": "save_samples",
    "use_cpu": "device",
    "resume_from_checkpoint": "ckpt_output_dir (resume from its latest complete checkpoint-N is automatic)",
    "local_rank": "nproc_per_node",
}
# sft() parameters with the same name as an SFTConfig field (set through sft(), never as a kwarg)
SAME_NAME = frozenset({"learning_rate", "warmup_steps"})
# LoRA through peft.LoraConfig: our kwarg -> LoraConfig field
LORA_FIELDS = {"lora_r": "r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
               "lora_target_modules": "target_modules"}



def static_launch(config) -> Launch:
    """The layout the login node can know: nproc_per_node when it is a number (else 1), the node count."""
    nproc = config.nproc_per_node if isinstance(config.nproc_per_node, int) else 1
    nnodes = config.nnodes or getattr(config.slurm, "nodes", None) or 1  # slurm: the allocation's nodes
    return Launch(nproc_per_node=nproc, nnodes=nnodes, device=config.device or "cpu")


def batch_layout(effective_batch_size: int, world: int, max_micro: Optional[int]) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) whose product times world is exactly the effective
    batch; the per-device batch is the largest divisor not above max_micro (None: no limit)."""
    if effective_batch_size % world:
        raise ConfigError("effective_batch_size",
                          f"{effective_batch_size} is not divisible by the {world} training processes "
                          "(nnodes x nproc_per_node)",
                          f"use a multiple of {world}, e.g. {world * max(1, effective_batch_size // world)}")
    per_world = effective_batch_size // world
    cap = per_world if max_micro is None else max(1, min(per_world, max_micro))
    micro = max(d for d in range(1, cap + 1) if per_world % d == 0)
    return micro, per_world // micro


def map_args(config, launch) -> dict[str, Any]:
    """trl.SFTConfig kwargs for this config and launch layout. Pure (nproc_per_node must be an int)."""
    world = int(launch.nnodes or 1) * int(launch.nproc_per_node)
    max_micro = None
    if config.max_tokens_per_gpu is not None:
        max_micro = max(1, config.max_tokens_per_gpu // config.max_seq_len)
    micro, accum = batch_layout(config.effective_batch_size, world, max_micro)
    args: dict[str, Any] = {
        "output_dir": str(config.ckpt_output_dir),
        "num_train_epochs": config.num_epochs or 1,
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": accum,
        "learning_rate": config.learning_rate,
        "max_length": config.max_seq_len,
        "logging_strategy": "steps",
        "logging_steps": 1,
        "report_to": list(trackers(config.tracking)) or "none",  # a report_to kwarg replaces it (check_tracking)
        "disable_tqdm": True,
    }
    if config.warmup_steps is not None:
        args["warmup_steps"] = config.warmup_steps
    if config.save_samples:
        args["save_strategy"] = "steps"
        args["save_steps"] = -(-config.save_samples // config.effective_batch_size)
    else:
        args["save_strategy"] = "epoch"
    if launch.device == "cpu":
        args["use_cpu"] = True  # under torchrun this makes accelerate MULTI_CPU: DDP over gloo
    args.update({k: v for k, v in config.backend_kwargs.items() if k not in LORA_FIELDS})
    return args


def check_tracking(config) -> None:
    """sft()'s tracking and SFTConfig's report_to name the same thing: one of them. Pure."""
    if trackers(config.tracking) and config.backend_kwargs.get("report_to") is not None:
        raise ConfigError("report_to", f"is set and so is tracking={config.tracking!r}; both choose the loggers",
                          "use tracking (one run across requeues, docs/tracking.md), or drop it and pass report_to")


def lora_args(config) -> Optional[dict[str, Any]]:
    """peft.LoraConfig kwargs, or None when lora_r is unset (full fine-tuning). Pure."""
    kw = config.backend_kwargs
    if not kw.get("lora_r"):
        return None
    lora = {"task_type": "CAUSAL_LM"}
    lora.update({dst: kw[src] for src, dst in LORA_FIELDS.items() if kw.get(src) is not None})
    return lora


def check_lora(kw) -> None:
    """peft.LoraConfig checks almost nothing; refuse bad LoRA values here, naming the key. Pure."""
    def bad(key, want):
        raise ConfigError(key, f"must be {want}, got {kw[key]!r}", f"set {key} to {want}")

    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if kw.get("lora_r") is not None and not (isinstance(kw["lora_r"], int) and kw["lora_r"] > 0):
        bad("lora_r", "a positive int")
    if kw.get("lora_alpha") is not None and not (number(kw["lora_alpha"]) and kw["lora_alpha"] > 0):
        bad("lora_alpha", "a positive number")
    if kw.get("lora_dropout") is not None and not (number(kw["lora_dropout"]) and 0 <= kw["lora_dropout"] < 1):
        bad("lora_dropout", "a number in [0, 1)")
    modules = kw.get("lora_target_modules")
    if modules is not None and not (isinstance(modules, str) or
                                    (isinstance(modules, list) and all(isinstance(m, str) for m in modules))):
        bad("lora_target_modules", "a module name pattern or a list of module names (e.g. ['q_proj', 'v_proj'])")
    if not kw.get("lora_r") and any(kw.get(k) is not None for k in LORA_FIELDS if k != "lora_r"):
        key = next(k for k in LORA_FIELDS if k != "lora_r" and kw.get(k) is not None)
        raise ConfigError(key, "has no effect without lora_r", "set lora_r (e.g. lora_r=8) to train LoRA adapters")
