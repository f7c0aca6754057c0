"""Our config maps onto instructlab-training's real TorchrunArgs/TrainingArgs as training_hub documents."""
import pytest

from hpc_sft.backends.instructlab import backend as ilt
from hpc_sft.config.validate import build_config, split_values
from hpc_sft.launch import WORKER_DIR, Launch

real = pytest.importorskip("instructlab.training", reason="instructlab-training is not installed")


def config_of(**kw):
    return build_config(*split_values(kw))


def test_static_field_list_matches_the_real_class():
    assert ilt.TRAINING_ARGS_FIELDS == set(real.TrainingArgs.model_fields)
    assert ilt.TORCHRUN_KWARGS <= set(real.TorchrunArgs.model_fields)


def test_documented_mapping(base_kwargs):
    config = config_of(**base_kwargs, save_samples=50, warmup_steps=3, lora={"rank": 4}, random_seed=9)
    launch = Launch(nproc_per_node=2, nnodes=2, node_rank=1, rdzv_id=77, rdzv_endpoint="node1:29511",
                    device="cpu")
    torch_kw, train_kw = ilt.map_args(config, launch)
    targs = real.TrainingArgs(**train_kw)
    rargs = real.TorchrunArgs(**torch_kw)
    assert targs.max_batch_len == base_kwargs["max_tokens_per_gpu"]
    assert targs.data_output_dir == base_kwargs["ckpt_output_dir"] + "/data"
    assert (targs.num_epochs, targs.effective_batch_size, targs.learning_rate) == (1, 4, 1e-4)
    assert (targs.save_samples, targs.warmup_steps, targs.random_seed, targs.lora.rank) == (50, 3, 9, 4)
    assert targs.disable_flash_attn is True and targs.pretraining_config is None
    assert (rargs.nproc_per_node, rargs.nnodes, rargs.node_rank, rargs.rdzv_id) == (2, 2, 1, 77)
    assert rargs.rdzv_endpoint == "node1:29511" and rargs.master_addr is None


def test_unset_optionals_keep_backend_defaults(base_kwargs):
    targs = real.TrainingArgs(**ilt.map_args(config_of(**base_kwargs, data_output_dir="/x/d"),
                                             Launch(nproc_per_node="gpu", device="cuda"))[1])
    defaults = real.TrainingArgs.model_fields
    for name in ("save_samples", "warmup_steps", "checkpoint_at_epoch", "accelerate_full_state_at_epoch"):
        assert getattr(targs, name) == defaults[name].default
    assert targs.data_output_dir == "/x/d" and targs.disable_flash_attn is False


def test_pretraining_mapping(base_kwargs, tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "a b c"}\n')
    config = config_of(**{**base_kwargs, "data_path": str(data)}, is_pretraining=True, block_size=64,
                       document_column_name="text")
    targs = real.TrainingArgs(**ilt.map_args(config, Launch(nproc_per_node=1))[1])
    assert targs.pretraining_config.block_size == 64
    assert targs.pretraining_config.document_column_name == "text"


def test_master_addr_mapping(base_kwargs):
    config = config_of(**base_kwargs, nnodes=2, node_rank=0, master_addr="n1", master_port=2345, device="cpu")
    from hpc_sft.launch import finalize, local_launch

    rargs = real.TorchrunArgs(**ilt.map_args(config, finalize(local_launch(config)))[0])
    assert rargs.nproc_per_node == 1
    assert (rargs.master_addr, rargs.master_port, rargs.rdzv_endpoint) == ("n1", 2345, None)


def test_cpu_environment_reaches_workers():
    env = ilt.training_env(Launch(nproc_per_node=2, device="cpu", env=(("X", "1"),)))
    assert env["HPC_SFT_CPU"] == "1" and env["ACCELERATE_USE_CPU"] == "1" and env["X"] == "1"
    assert env["PYTHONPATH"].split(":")[0] == str(WORKER_DIR)
    assert "HPC_SFT_CPU" not in ilt.training_env(Launch(nproc_per_node=1, device="cuda"))


def test_untested_backend_version_is_refused(monkeypatch):
    monkeypatch.setattr(ilt, "installed_version", lambda: "0.99.0")
    monkeypatch.delenv("HPC_SFT_ALLOW_UNTESTED_BACKEND", raising=False)
    with pytest.raises(RuntimeError, match="instructlab-training 0.99.0 is installed; hpc-sft is tested with 0.16.2"):
        ilt.check_version()


def test_the_untested_version_override_reaches_the_workers_gate(monkeypatch):
    """One rule for the parent's check and the workers' patches: the override lets both through."""
    from hpc_sft._worker.hpc_sft_shim import gate

    monkeypatch.setattr(ilt, "installed_version", lambda: "0.99.0")
    monkeypatch.setattr("importlib.metadata.version", lambda name: "0.99.0")
    monkeypatch.delenv(gate.OVERRIDE_ENV, raising=False)
    with pytest.raises(RuntimeError, match="HPC_SFT_EXACT_RESUME: instructlab-training 0.99.0 is installed"):
        gate.require_tested("HPC_SFT_EXACT_RESUME")
    monkeypatch.setenv(gate.OVERRIDE_ENV, "1")
    ilt.check_version()
    gate.require_tested("HPC_SFT_EXACT_RESUME")  # the worker shim honours it too (it did not before)


def test_a_missing_trl_package_names_the_extra():
    from hpc_sft.backends.trl.backend import require_packages
    from hpc_sft.errors import ConfigError

    with pytest.raises(ConfigError, match=r"backend: 'trl' needs no_such_pkg_x.*pip install 'hpc-sft\[trl\]'"):
        require_packages(("trl", "no_such_pkg_x"))
    require_packages(("trl", "peft"))  # both installed here: no error
