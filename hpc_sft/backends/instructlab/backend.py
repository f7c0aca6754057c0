"""instructlab-training adapter: a pure mapping of our config to its arguments, and a thin run()."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..._worker.hpc_sft_shim.gate import OVERRIDE_ENV, untested
from ..._worker.hpc_sft_shim.gate import TESTED_ILT_VERSIONS as TESTED_VERSIONS  # one list: parent and workers
from ..._worker.hpc_sft_shim import saves
from ...errors import ConfigError, TrainingError
from ...launch import Launch, worker_env
from ...rundir.layout import node_log
from ...tracking import tensorboard_dir, trackers as tracker_names
from ..base import Backend


# TrainingArgs fields of instructlab-training 0.16.2 (a test compares this with the real class).
TRAINING_ARGS_FIELDS = frozenset({
    "model_path", "chat_tmpl_path", "use_legacy_tmpl", "data_path", "ckpt_output_dir", "data_output_dir",
    "max_seq_len", "max_batch_len", "num_epochs", "effective_batch_size", "save_samples", "learning_rate",
    "adamw_weight_decay", "adamw_betas", "adamw_eps", "warmup_steps", "random_seed", "use_dolomite",
    "is_padding_free", "checkpoint_at_epoch", "accelerate_full_state_at_epoch", "mock_data", "mock_data_len",
    "deepspeed_options", "fsdp_options", "distributed_backend", "disable_flash_attn", "lora", "process_data",
    "keep_last_checkpoint_only", "pretraining_config", "data_process_num_cpu_procs", "use_liger",
    "trust_remote_code", "log_level", "mlflow_tracking_uri", "mlflow_experiment_name", "mlflow_run_name",
    "wandb_project", "wandb_entity", "wandb_run_name", "tensorboard_log_dir", "validation_split",
    "validation_frequency", "on_demand_checkpointing", "callbacks",
})
TORCHRUN_KWARGS = frozenset({"master_addr", "master_port"})
# sft() parameter -> TrainingArgs field, copied when set
DIRECT = {
    "model_path": "model_path", "data_path": "data_path", "ckpt_output_dir": "ckpt_output_dir",
    "max_seq_len": "max_seq_len", "max_tokens_per_gpu": "max_batch_len", "num_epochs": "num_epochs",
    "effective_batch_size": "effective_batch_size", "learning_rate": "learning_rate",
    "save_samples": "save_samples", "warmup_steps": "warmup_steps", "checkpoint_at_epoch": "checkpoint_at_epoch",
    "accelerate_full_state_at_epoch": "accelerate_full_state_at_epoch",
}
MAPPED = frozenset(DIRECT.values()) | {"data_output_dir", "pretraining_config"}


class InstructLabTrainingSFTBackend(Backend):
    """SFT with instructlab-training's torchrun launcher (imported only when training runs)."""

    name = "instructlab-training"
    kwarg_fields = (TRAINING_ARGS_FIELDS - MAPPED) | TORCHRUN_KWARGS
    required = {"max_seq_len": 4096, "max_tokens_per_gpu": 40000, "effective_batch_size": 128,
                "learning_rate": 1e-5}
    aliases = {"max_batch_len": "max_tokens_per_gpu", "pretraining_config": "is_pretraining and block_size"}
    pretokenizes = True
    trackers = ("tensorboard", "wandb")  # its logger.py: TensorBoardHandler, WandbHandler
    free_kwargs = frozenset({
        "data_process_num_cpu_procs", "log_level", "keep_last_checkpoint_only", "mlflow_tracking_uri",
        "mlflow_experiment_name", "mlflow_run_name", "wandb_project", "wandb_entity", "wandb_run_name",
        "tensorboard_log_dir", "master_addr", "master_port", "callbacks"})

    @classmethod
    def check_static(cls, config) -> None:
        """Batch arithmetic instructlab-training would only refuse on the compute node; pure (dry runs too)."""
        super().check_static(config)
        seq, tokens = config.max_seq_len, config.max_tokens_per_gpu
        if seq is not None and tokens is not None and seq > tokens:
            raise ConfigError("max_seq_len", f"{seq} is larger than max_tokens_per_gpu={tokens}: one sample of "
                              "max_seq_len tokens must fit in one device's micro-batch",
                              f"raise max_tokens_per_gpu to at least {seq}, or lower max_seq_len to {tokens}")
        nproc = config.nproc_per_node
        nodes = config.slurm.nodes if config.slurm is not None else (config.nnodes or 1)
        world = nodes * nproc if isinstance(nproc, int) else None
        if world and config.effective_batch_size is not None and config.effective_batch_size < world:
            raise ConfigError("effective_batch_size", f"{config.effective_batch_size} is smaller than the {world} "
                              f"training processes ({nodes} node(s) x nproc_per_node={nproc}): each process needs "
                              "at least one sample per step", f"set effective_batch_size to at least {world}, or "
                              "use fewer nodes or processes")

    def check_values(self, config) -> None:
        """Build the real TrainingArgs once, so a bad backend value fails before anything is queued."""
        super().check_values(config)
        if config.device == "cpu" and (config.backend_kwargs.get("validation_split") or 0) > 0:
            raise ConfigError("validation_split", "needs CUDA in instructlab-training 0.16.2 (its validation loss "
                              "runs on cuda)", "drop validation_split on CPU")
        import pydantic

        from .command import check_args, config_module

        try:
            args = config_module().TrainingArgs(**map_args(config, Launch(nproc_per_node=1,
                                                                          device=config.device or "cuda"))[1])
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(part) for part in err["loc"]) or "backend_kwargs"
            raise ConfigError(key, f"rejected by instructlab-training: {err['msg']}",
                              "see the TrainingArgs reference in docs/backends.md") from None
        check_args(args)

    def execute_training(self, config, launch) -> None:
        """Tokenize if asked, then start torchrun with instructlab-training's own command line and stay its
        parent (launcher.py) without importing its training module. Sets stop_signal when a signal asked
        the workers for a save."""
        check_version()
        from . import command, launcher

        torch_args, args = command.build_args(*map_args(config, launch))
        command.check_args(args)
        command.check_packages(args)
        if args.process_data:
            self.process_data(config, args.data_output_dir)
        ckpt = Path(config.ckpt_output_dir)
        ckpt.mkdir(parents=True, exist_ok=True)
        argv = command.torchrun_command(torch_args, args)
        launcher.say(f"{command.LOGGED_AS} {command.redacted(argv)}")
        env = {**os.environ, **training_env(launch), **saves.env_for(config.full_state_every_min,
                                                                      config.keep_full_states),
               **self.tracking_env(config)}
        log = ckpt / node_log(launch.node_rank)
        code, self.stop_signal = launcher.run(argv, env, log, args.on_demand_checkpointing)
        launcher.say(exit_words(code, None))
        if code != 0:
            raise TrainingError(f"instructlab-training failed on node {launch.node_rank}: "
                                f"{exit_words(code, self.stop_signal)}. Read the log: {log}")

    def process_data(self, config, output_dir: str) -> None:
        """Tokenize config.data_path into output_dir/data.jsonl, as run_training would."""
        check_version()
        from instructlab.training import data_process as dp

        procs = config.backend_kwargs.get("data_process_num_cpu_procs") or min(16, len(os.sched_getaffinity(0)))
        if config.is_pretraining:
            dp.process_documents_for_pretraining(
                data_path=config.data_path, data_output_path=output_dir, model_path=config.model_path,
                num_cpu_procs=procs, document_column_name=config.document_column_name or "document")
        else:
            dp.process_data(data_path=config.data_path, data_output_path=output_dir, max_seq_len=config.max_seq_len,
                            model_path=config.model_path, num_cpu_procs=procs,
                            chat_tmpl_path=config.backend_kwargs.get("chat_tmpl_path"))

    def tidy_checkpoints(self, ckpt_dir: Path, say) -> None:
        """Finish an interrupted publish; move torn full states to quarantine/ (resume skips them)."""
        from .checkpoints import repair_and_quarantine

        repair_and_quarantine(ckpt_dir, say)

    @classmethod
    def measured_save(cls, ckpt_dir: Path) -> tuple[Optional[float], Optional[int]]:
        """Longest save and largest size recorded in the completeness markers of the full states kept."""
        from .checkpoints import measured_save

        return measured_save(ckpt_dir)

    def progress(self, config):
        """The newest complete full_state/epoch_E and what its training_metadata.json says."""
        from ...requeue import StateFacts
        from .checkpoints import newest_state

        path, meta = newest_state(Path(config.ckpt_output_dir))
        if not meta:
            return None, None
        return StateFacts(int(meta["current_epoch"]), int(meta["samples_seen"]), meta.get("global_step")), path

    @staticmethod
    def version() -> str:
        return installed_version()


def data_output_dir(config) -> str:
    return config.data_output_dir or os.path.join(config.ckpt_output_dir, "data")


def map_args(config, launch) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TorchrunArgs kwargs, TrainingArgs kwargs) for one node. Pure."""
    torch_kw = {"nproc_per_node": launch.nproc_per_node, "nnodes": launch.nnodes,
                "node_rank": launch.node_rank, "rdzv_id": launch.rdzv_id}
    if launch.rdzv_endpoint:
        torch_kw["rdzv_endpoint"] = launch.rdzv_endpoint
    elif launch.master_addr:
        torch_kw.update(master_addr=launch.master_addr, master_port=launch.master_port)
    train = {dst: getattr(config, src) for src, dst in DIRECT.items() if getattr(config, src) is not None}
    train["data_output_dir"] = data_output_dir(config)
    if "tensorboard" in tracker_names(config.tracking):  # W&B: through the environment (tracking_env)
        train["tensorboard_log_dir"] = str(tensorboard_dir(config.ckpt_output_dir))
    if config.is_pretraining:
        train["pretraining_config"] = {"block_size": config.block_size,
                                       "document_column_name": config.document_column_name or "document"}
    train.update({k: v for k, v in config.backend_kwargs.items() if k not in TORCHRUN_KWARGS})
    train.setdefault("data_process_num_cpu_procs", min(16, len(os.sched_getaffinity(0))))
    if not launch.process_data:
        train["process_data"] = False
    if launch.on_demand_checkpointing:
        train["on_demand_checkpointing"] = True
    if launch.device == "cpu":
        train["disable_flash_attn"] = True
    return torch_kw, train


def training_env(launch) -> dict[str, str]:
    """Environment changes for torchrun and its workers."""
    env = worker_env(launch)
    env["HPC_SFT_EXACT_RESUME"] = "1"  # worker shim: exact mid-epoch resume, atomic full-state saves
    env.setdefault("CHECKPOINT_TRIGGER_FILENAME", f"hpc-sft-ckpt-{os.getpid()}")  # never the shared default
    env["HPC_SFT_EQUAL_MINIBATCHES"] = "1"  # padded packer (flash attention off) can deadlock ranks otherwise
    if launch.on_demand_checkpointing:
        # Ctrl-C reaches the whole foreground process group: only the training parent may react (it asks
        # for a save); torchrun must not kill its workers on INT, and the workers must not die of it
        env["HPC_SFT_SHIELD_SIGNALS"] = ",".join(filter(None, [env.get("HPC_SFT_SHIELD_SIGNALS"), "INT"]))
        env["PET_SIGNALS_TO_HANDLE"] = "SIGTERM,SIGHUP,SIGQUIT"  # torchrun's default list without SIGINT
    if launch.device == "cpu":
        env["HPC_SFT_CPU"] = "1"
    return env


def exit_words(code: Optional[int], stop_signal: Optional[str]) -> str:
    said = "torchrun did not exit" if code is None else f"torchrun exited with {code}"
    if stop_signal:
        said += (f" after {stop_signal} asked for a full-state save (killed before the save finished? Slurm's "
                 "warning lead, --signal=...@SECONDS, must exceed the save time)")
    return said


def installed_version() -> str:
    from importlib.metadata import version

    return version("instructlab-training")


def check_version() -> None:
    """CPU patches and resume fixes are written against TESTED_VERSIONS; refuse others clearly."""
    found = installed_version()
    if untested(found):
        raise TrainingError(
            f"instructlab-training {found} is installed; hpc-sft is tested with {', '.join(TESTED_VERSIONS)}",
            f"pip install 'instructlab-training=={TESTED_VERSIONS[-1]}' (or set {OVERRIDE_ENV}=1 at your own risk)")
