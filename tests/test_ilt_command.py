"""The torchrun command hpc-sft starts for instructlab-training is the one its own run_training builds."""
import logging

import pytest

from hpc_sft.backends.instructlab import command
from hpc_sft.errors import ConfigError

real = pytest.importorskip("instructlab.training", reason="instructlab-training is not installed")


class NotStarted(Exception):
    """Raised in place of starting torchrun: run_training has logged its command by then, and gives up."""


def logged_by_run_training(torch_kw, train_kw, monkeypatch, caplog) -> str:
    """The command line instructlab-training's run_training logs just before it would start torchrun."""
    from instructlab.training import main_ds

    def refuse(*_args, **_kw):
        raise NotStarted()

    monkeypatch.setattr(main_ds, "StreamablePopen", refuse)  # never start a training (and never fake its output)
    with caplog.at_level(logging.INFO):
        main_ds.run_training(real.TorchrunArgs(**torch_kw), real.TrainingArgs(**train_kw))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(command.LOGGED_AS)]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    return lines[0][len(command.LOGGED_AS) + 1:]


def required(tmp_path):
    (tmp_path / "model").mkdir(exist_ok=True)
    return {"model_path": str(tmp_path / "model"), "data_path": str(tmp_path / "d.jsonl"),
            "ckpt_output_dir": str(tmp_path / "ckpt"), "data_output_dir": str(tmp_path / "data"),
            "max_seq_len": 256, "max_batch_len": 1024, "effective_batch_size": 8, "learning_rate": 2e-4,
            "process_data": False, "disable_flash_attn": True}  # no GPU here: flash attention cannot be checked


CASES = {
    "defaults, rendezvous endpoint": (
        {"nproc_per_node": 2, "nnodes": 2, "node_rank": 1, "rdzv_id": 77, "rdzv_endpoint": "node1:29511"}, {}),
    "what hpc-sft sets on Slurm": (
        {"nproc_per_node": 1, "nnodes": 4, "node_rank": 0, "rdzv_id": "4711", "rdzv_endpoint": "n0:29400"},
        {"on_demand_checkpointing": True, "data_process_num_cpu_procs": 2, "save_samples": 64, "warmup_steps": 3,
         "num_epochs": 2, "random_seed": 9}),
    "static master, pretraining, loggers": (
        {"nproc_per_node": "gpu", "nnodes": 2, "node_rank": 0, "rdzv_id": 1, "master_addr": "n1",
         "master_port": 2345},
        {"pretraining_config": {"block_size": 64, "document_column_name": "text"}, "keep_last_checkpoint_only": True,
         "mlflow_tracking_uri": "file:/m", "mlflow_experiment_name": "e", "mlflow_run_name": "r",
         "wandb_project": "p", "wandb_entity": "w", "wandb_run_name": "wr", "tensorboard_log_dir": "/tb",
         "log_level": "DEBUG"}),
    "standalone, LoRA, legacy template, mock data": (
        {"nproc_per_node": 1, "nnodes": 1, "node_rank": 0, "rdzv_id": "x"},
        {"lora": {"rank": 4, "alpha": 8, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]},
         "accelerate_full_state_at_epoch": False, "checkpoint_at_epoch": False, "use_legacy_tmpl": True,
         "mock_data": True, "mock_data_len": 100}),
    "validation, optimizer, FSDP and DeepSpeed options": (
        {"nproc_per_node": 8, "nnodes": 1, "node_rank": 0, "rdzv_id": 3, "master_addr": "h"},
        {"validation_split": 0.1, "validation_frequency": 5, "chat_tmpl_path": "/t/tmpl.py", "trust_remote_code": True,
         "adamw_weight_decay": 0.01, "adamw_betas": (0.8, 0.9), "adamw_eps": 1e-6,
         "fsdp_options": {"cpu_offload_params": True, "sharding_strategy": "FULL_SHARD"},
         "deepspeed_options": {"save_samples": 32, "cpu_offload_optimizer": True,
                               "cpu_offload_optimizer_pin_memory": True}}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_command_as_run_training(case, tmp_path, monkeypatch, caplog):
    torch_kw, extra = CASES[case]
    train_kw = {**required(tmp_path), **extra}
    ours = command.torchrun_command(*command.build_args(torch_kw, train_kw))
    assert command.redacted(ours) == logged_by_run_training(torch_kw, train_kw, monkeypatch, caplog)


def test_trust_remote_code_from_the_environment_too(tmp_path, monkeypatch):
    torch_kw = CASES["defaults, rendezvous endpoint"][0]
    monkeypatch.setenv("TRUST_REMOTE_CODE", "yes")
    assert "--trust_remote_code" in command.torchrun_command(*command.build_args(torch_kw, required(tmp_path)))


def test_refuses_what_run_training_refuses(tmp_path):
    torch_kw = CASES["defaults, rendezvous endpoint"][0]
    lora = {**required(tmp_path), "lora": {"rank": 4}}
    with pytest.raises(ConfigError, match="lora: .*accelerate_full_state_at_epoch=false"):
        command.check_args(command.build_args(torch_kw, lora)[1])
    with pytest.raises(ValueError, match="accelerate_full_state_at_epoch"):  # and so does instructlab-training
        from instructlab.training.utils import check_valid_train_args
        check_valid_train_args(real.TrainingArgs(**lora))
    model_file = tmp_path / "model.bin"
    model_file.write_text("x")
    with pytest.raises(ConfigError, match="model_path: .*is a file"):
        command.check_args(command.build_args(torch_kw, {**required(tmp_path), "model_path": str(model_file)})[1])


def test_flash_attention_needs_its_package_where_training_runs(tmp_path):
    args = command.build_args(CASES["defaults, rendezvous endpoint"][0],
                              {**required(tmp_path), "disable_flash_attn": False})[1]
    with pytest.raises(ConfigError, match="disable_flash_attn: needs the flash_attn package.*pip install flash-attn"):
        command.check_packages(args)


def test_the_parent_never_imports_the_training_module():
    import subprocess
    import sys

    code = ("import sys; from hpc_sft.backends.instructlab import command as c; "
            "c.torchrun_command(*c.build_args({'nproc_per_node': 1, 'nnodes': 1, 'node_rank': 0, 'rdzv_id': 1}, "
            "{'model_path': 'a/b', 'data_path': 'd', 'ckpt_output_dir': 'c', 'data_output_dir': 'o', "
            "'max_seq_len': 8, 'max_batch_len': 8, 'effective_batch_size': 1, 'learning_rate': 1.0})); "
            "print(sorted(m for m in ('torch', 'transformers', 'instructlab.training') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_tracking_command_is_the_one_run_training_builds(tmp_path, monkeypatch, caplog):
    """sft(tracking=...) maps to instructlab-training's own TensorBoard logger flag (W&B: its environment)."""
    from hpc_sft.backends.instructlab.backend import map_args
    from hpc_sft.config.validate import build_config, split_values
    from hpc_sft.launch import Launch
    from hpc_sft.tiny import fast_cpu_kwargs

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "d.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, '
                                      '{"role": "assistant", "content": "hello"}]}\n')
    config = build_config(*split_values(fast_cpu_kwargs(tmp_path / "model", tmp_path / "d.jsonl", tmp_path / "ckpt",
                                                         tracking=["tensorboard", "wandb"])))
    torch_kw, train_kw = map_args(config, Launch(nproc_per_node=1, device="cpu", process_data=False))
    ours = command.torchrun_command(*command.build_args(torch_kw, train_kw))
    assert f"--tensorboard_log_dir={tmp_path / 'ckpt' / 'tensorboard'}" in ours
    assert command.redacted(ours) == logged_by_run_training(torch_kw, train_kw, monkeypatch, caplog)
