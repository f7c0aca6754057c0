"""instructlab-training's torchrun command, built from its TrainingArgs the way its run_training builds it,
without importing its training module (~5 s of torch, transformers and peft in a process that only waits)."""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ...errors import ConfigError, TrainingError

LOGGED_AS = "Running training command as subprocess:"  # the line run_training logs, and so do we


@functools.cache
def package_dir() -> Path:
    """site-packages/instructlab/training, found without running the package's __init__ (which imports torch
    through its logger)."""
    spec = importlib.util.find_spec("instructlab.training")
    if spec is None or not spec.submodule_search_locations:
        raise TrainingError("instructlab-training is not installed here",
                            "pip install 'hpc-sft' in the environment the job runs in")
    return Path(list(spec.submodule_search_locations)[0])


@functools.cache
def config_module() -> ModuleType:
    """instructlab-training's config.py (pydantic and the standard library only), loaded on its own: the same
    TrainingArgs, TorchrunArgs and enums, in 0.2 s instead of the package's 1.5 s."""
    name = "hpc_sft_ilt_config"
    spec = importlib.util.spec_from_file_location(name, package_dir() / "config.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the models' annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def build_args(torch_kw: dict[str, Any], train_kw: dict[str, Any]):
    """(TorchrunArgs, TrainingArgs), validated by instructlab-training's own models."""
    cfg = config_module()
    return cfg.TorchrunArgs(**torch_kw), cfg.TrainingArgs(**train_kw)


def rendezvous_flags(torch_args) -> list[str]:
    flags = [f"--nproc-per-node={torch_args.nproc_per_node}", f"--nnodes={torch_args.nnodes}",
             f"--node-rank={torch_args.node_rank}", f"--rdzv-id={torch_args.rdzv_id}"]
    if torch_args.master_addr:
        flags += [f"--master-addr={torch_args.master_addr}", "--rdzv-backend=static"]
        return flags + ([f"--master-port={torch_args.master_port}"] if torch_args.master_port else [])
    if torch_args.rdzv_endpoint:
        return flags + [f"--rdzv-endpoint={torch_args.rdzv_endpoint}"]
    return flags + ["--standalone"]


def core_flags(a) -> list[str]:
    return [f"--model_name_or_path={a.model_path}", f"--data_path={a.data_output_dir}/data.jsonl",
            f"--output_dir={a.ckpt_output_dir}", f"--num_epochs={a.num_epochs}",
            f"--effective_batch_size={a.effective_batch_size}", f"--learning_rate={a.learning_rate}",
            f"--num_warmup_steps={a.warmup_steps}", f"--save_samples={a.save_samples}",
            f"--log_level={a.log_level}", f"--max_batch_len={a.max_batch_len}", f"--seed={a.random_seed}",
            f"--adamw_weight_decay={a.adamw_weight_decay}", f"--adamw_beta1={a.adamw_betas[0]}",
            f"--adamw_beta2={a.adamw_betas[1]}", f"--adamw_eps={a.adamw_eps}"]


OPTIONAL_VALUES = ("mlflow_tracking_uri", "mlflow_experiment_name", "mlflow_run_name", "wandb_project",
                   "wandb_entity", "wandb_run_name", "tensorboard_log_dir")


def logging_flags(a) -> list[str]:
    flags = [f"--{name}={getattr(a, name)}" for name in OPTIONAL_VALUES if getattr(a, name) is not None]
    if a.validation_split > 0.0:
        flags.append(f"--validation_split={a.validation_split}")
        if a.validation_frequency is not None:
            flags.append(f"--validation_frequency={a.validation_frequency}")
    return flags


def trusts_remote_code(a) -> bool:
    return bool(a.trust_remote_code) or os.environ.get("TRUST_REMOTE_CODE", "").lower() in ("1", "true", "yes")


def chat_template(a):
    if a.use_legacy_tmpl:
        return str(package_dir() / "chat_templates" / "ibm_legacy_tmpl.py")
    return a.chat_tmpl_path


def feature_flags(a) -> list[str]:
    flags = []
    if a.pretraining_config is not None:
        flags += [f"--block-size={a.pretraining_config.block_size}",
                  f"--document-column-name={a.pretraining_config.document_column_name}"]
    if chat_template(a) is not None:
        flags.append(f"--chat-tmpl-path={chat_template(a)}")
    switches = [("--use_liger", a.use_liger), ("--trust_remote_code", trusts_remote_code(a)),
                ("--keep_last_checkpoint_only", a.keep_last_checkpoint_only),
                ("--checkpoint_at_epoch", a.checkpoint_at_epoch),
                ("--accelerate_full_state_at_epoch", a.accelerate_full_state_at_epoch), ("--mock_data", a.mock_data)]
    flags += [flag for flag, on in switches if on]
    if a.mock_data and a.mock_data_len:
        flags.append(f"--mock_len={a.mock_data_len}")
    if a.disable_flash_attn:
        flags.append("--disable_flash_attn")
    return flags + lora_flags(a)


def lora_flags(a) -> list[str]:
    if not a.lora:
        return []
    flags = [f"--lora_r={a.lora.rank}", f"--lora_alpha={a.lora.alpha}", f"--lora_dropout={a.lora.dropout}",
             "--lora_target_modules", *(a.lora.target_modules or [])]
    nf4 = config_module().QuantizeDataType.NF4
    return flags + (["--lora_quant_bits=4"] if a.lora.quantize_data_type in (nf4, nf4.value) else [])


def distributed_flags(a) -> list[str]:
    ds, fsdp = a.deepspeed_options, a.fsdp_options
    flags = [f"--distributed_training_framework={a.distributed_backend.value}"]
    if ds.save_samples:
        flags.append(f"--save_samples_ds={ds.save_samples}")
    if ds.cpu_offload_optimizer:
        flags += ["--cpu_offload_optimizer", f"--cpu_offload_optimizer_ratio={ds.cpu_offload_optimizer_ratio}"]
        flags += ["--cpu_offload_optimizer_pin_memory"] if ds.cpu_offload_optimizer_pin_memory else []
    if fsdp.cpu_offload_params:
        flags.append("--cpu_offload_params_fsdp")
    flags.append(f"--fsdp_sharding_strategy={fsdp.sharding_strategy.value}")
    flags += ["--keep_last_checkpoint_only"] if a.keep_last_checkpoint_only else []  # run_training repeats it
    flags += ["--on_demand_checkpointing"] if a.on_demand_checkpointing else []
    return flags + callback_flags(a)


def callback_flags(a) -> list[str]:
    if not a.callbacks:
        return []
    from instructlab.training.callbacks import serialize_callbacks_for_cli  # only for users who pass callbacks

    return [f"--callbacks={serialize_callbacks_for_cli(a.callbacks)}"]


def torchrun_command(torch_args, a) -> list[str]:
    """The argv run_training of instructlab-training 0.16.2 builds (a test compares the two on many configs)."""
    return ["torchrun", *rendezvous_flags(torch_args), str(package_dir() / "main_ds.py"), *core_flags(a),
            *logging_flags(a), *feature_flags(a), *distributed_flags(a)]


def redacted(command: list[str]) -> str:
    return " ".join("--callbacks=<redacted>" if c.startswith("--callbacks=") else c for c in command)


def check_args(a) -> None:
    """The refusals run_training makes before it starts torchrun (its check_valid_train_args), as our errors;
    check_packages adds the ones that depend on what is installed where training runs, and the backend's
    check_static (run at validation) the batch arithmetic."""
    if os.path.exists(a.model_path) and not os.path.isdir(a.model_path):
        raise ConfigError("model_path", f"{a.model_path} is a file, not a Hugging Face model directory",
                          "pass the directory that holds config.json")
    lora = a.lora is not None and a.lora.rank > 0
    if lora and a.accelerate_full_state_at_epoch:
        raise ConfigError("lora", "instructlab-training cannot save accelerate full states of LoRA models (which "
                          "resuming needs)", "set accelerate_full_state_at_epoch=false, or train without LoRA")
    if lora and a.use_liger:
        raise ConfigError("use_liger", "instructlab-training does not combine LoRA with Liger kernels",
                          "drop use_liger or lora")


def check_packages(a) -> None:
    """Optional packages the chosen features need, checked without importing them."""
    needs = [("flash_attn", not a.disable_flash_attn, "disable_flash_attn", "pip install flash-attn"),
             ("liger_kernel", a.use_liger, "use_liger", "pip install liger-kernel"),
             ("deepspeed", a.distributed_backend.value == "deepspeed", "distributed_backend",
              "pip install deepspeed")]
    for module, wanted, key, fix in needs:
        if wanted and importlib.util.find_spec(module) is None:
            raise ConfigError(key, f"needs the {module} package, which is not installed in {sys.prefix}",
                              f"{fix} in that environment")
