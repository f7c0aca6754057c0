"""Every validation error fires before any work starts, with a message naming the key and the fix."""

import pytest

import hpc_sft
from hpc_sft.config.validate import build_config
from tests.helpers import write_jsonl


def build(**kw):
    from hpc_sft.config.validate import split_values

    return build_config(*split_values(kw))


@pytest.mark.parametrize("key,value,words", [
    ("num_epochs", 0, ["num_epochs", "> 0"]),
    ("num_epochs", -2, ["num_epochs", "> 0"]),
    ("effective_batch_size", 0, ["effective_batch_size", "> 0"]),
    ("learning_rate", 0.0, ["learning_rate", "> 0"]),
    ("learning_rate", -1e-5, ["learning_rate", "> 0"]),
    ("max_seq_len", -5, ["max_seq_len", "> 0"]),
    ("max_tokens_per_gpu", 0, ["max_tokens_per_gpu", "> 0"]),
    ("warmup_steps", -1, ["warmup_steps", ">= 0"]),
    ("num_epochs", "3", ["num_epochs", "must be int", "str"]),
    ("num_epochs", True, ["num_epochs", "must be int", "bool"]),
    ("nproc_per_node", "all", ["nproc_per_node", "'gpu'"]),
    ("executor", "kubernetes", ["executor", "local", "slurm"]),
    ("device", "tpu", ["device", "cuda", "cpu"]),
    ("rdzv_endpoint", "node1", ["rdzv_endpoint", "host:port"]),
])
def test_bad_values_raise_value_error(base_kwargs, key, value, words):
    with pytest.raises(ValueError) as exc:
        hpc_sft.sft(**{**base_kwargs, key: value})
    for word in words:
        assert word in str(exc.value)


def test_pretraining_needs_block_size(base_kwargs):
    with pytest.raises(ValueError, match="block_size: is required when is_pretraining=True"):
        hpc_sft.sft(**base_kwargs, is_pretraining=True)


def test_rdzv_endpoint_and_master_addr_exclusive(base_kwargs):
    with pytest.raises(ValueError, match="rdzv_endpoint: and master_addr are both set"):
        hpc_sft.sft(**base_kwargs, nnodes=2, rdzv_endpoint="n1:29500", master_addr="n1")


def test_node_rank_below_nnodes(base_kwargs):
    with pytest.raises(ValueError, match="node_rank: 2 is not below nnodes=2.*0 to 1"):
        hpc_sft.sft(**base_kwargs, nnodes=2, node_rank=2)


def test_unknown_backend_lists_valid_choices(base_kwargs):
    with pytest.raises(ValueError, match="unknown backend 'ilab'.*use one of: instructlab-training, trl"):
        hpc_sft.sft(**base_kwargs, backend="ilab")


def test_trl_on_slurm_is_checked_before_anything_is_queued(base_kwargs):
    from hpc_sft.config.validate import split_values

    def build(**over):
        return build_config(*split_values({**base_kwargs, "backend": "trl", "executor": "slurm", **over}))

    with pytest.raises(ValueError, match="effective_batch_size: 4 is not divisible by the 3 training processes"):
        build(slurm={"nodes": 3})
    with pytest.raises(ValueError, match="is_pretraining: is not supported by the trl backend"):
        build(is_pretraining=True, block_size=64)
    config = build(slurm={"nodes": 2})
    assert config.backend == "trl" and config.slurm.nodes == 2


def test_unknown_backend_kwarg_lists_valid_fields(base_kwargs):
    with pytest.raises(ValueError) as exc:
        hpc_sft.sft(**base_kwargs, random_sed=1)
    text = str(exc.value)
    assert "random_sed: unknown instructlab-training backend field (did you mean 'random_seed'?)" in text
    assert "lora" in text and "keep_last_checkpoint_only" in text


def test_backend_field_set_through_sft_name(base_kwargs):
    with pytest.raises(ValueError, match="max_batch_len: is set through sft\\(\\)'s max_tokens_per_gpu"):
        hpc_sft.sft(**base_kwargs, max_batch_len=10)


def test_backend_required_values(base_kwargs):
    del base_kwargs["max_tokens_per_gpu"]
    with pytest.raises(ValueError, match="max_tokens_per_gpu: is required by the instructlab-training backend"):
        hpc_sft.sft(**base_kwargs)


def test_missing_positional_is_value_error(base_kwargs):
    with pytest.raises(ValueError, match="data_path"):
        hpc_sft.sft(base_kwargs["model_path"])


def test_missing_local_model_path(base_kwargs, tmp_path):
    for path in (str(tmp_path / "nope"), "./models/nope", "/abs/missing/model"):
        with pytest.raises(FileNotFoundError, match="model_path: .* does not exist"):
            hpc_sft.sft(**{**base_kwargs, "model_path": path})


def test_hub_id_is_allowed(base_kwargs):
    config = build(**{**base_kwargs, "model_path": "Qwen/Qwen2.5-0.5B-Instruct"})
    assert config.model_path == "Qwen/Qwen2.5-0.5B-Instruct"


def test_missing_data_path(base_kwargs, tmp_path):
    with pytest.raises(FileNotFoundError, match="data_path: .*missing.jsonl does not exist"):
        hpc_sft.sft(**{**base_kwargs, "data_path": str(tmp_path / "missing.jsonl")})


GOOD = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}


@pytest.mark.parametrize("bad,words", [
    ('{"messages": [', ["line 2", "not valid JSON"]),
    ('[1, 2]', ["line 2", "not an object"]),
    ({"text": "hi"}, ["line 2", "no 'messages' list"]),
    ({"messages": [{"role": "robot", "content": "x"}]}, ["line 2", "unknown role 'robot'", "assistant"]),
    ({"messages": [{"role": "user"}]}, ["line 2", "messages[0] has no string 'content'"]),
])
def test_jsonl_checked_line_by_line(base_kwargs, tmp_path, bad, words):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, bad, GOOD])
    with pytest.raises(ValueError) as exc:
        hpc_sft.sft(**{**base_kwargs, "data_path": str(path)})
    for word in words:
        assert word in str(exc.value)
    assert str(path) in str(exc.value)


def test_empty_data_file(base_kwargs, tmp_path):
    path = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="has no samples"):
        hpc_sft.sft(**{**base_kwargs, "data_path": str(path)})


def test_pretraining_data_checks_document_column(base_kwargs, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"document": "x"}, {"text": "y"}])
    kw = {**base_kwargs, "data_path": str(path), "is_pretraining": True, "block_size": 64}
    with pytest.raises(ValueError, match="line 2: has no string field 'document'"):
        hpc_sft.sft(**kw)
    assert build(**{**kw, "document_column_name": "text", "data_path": str(
        write_jsonl(tmp_path / "t.jsonl", [{"text": "y"}]))}).document_column_name == "text"


@pytest.mark.parametrize("key", ["node_rank", "rdzv_id", "rdzv_endpoint"])
def test_slurm_derived_values_are_rejected(base_kwargs, key):
    value = {"node_rank": 0, "rdzv_id": 7, "rdzv_endpoint": "n1:1234"}[key]
    with pytest.raises(ValueError, match=f"{key}: is derived on each compute node when executor='slurm'"):
        hpc_sft.sft(**base_kwargs, executor="slurm", **{key: value})


def test_slurm_nnodes_must_match_nodes(base_kwargs):
    with pytest.raises(ValueError, match="nnodes: is 3 but slurm.nodes is 2"):
        hpc_sft.sft(**base_kwargs, executor="slurm", nnodes=3, slurm={"nodes": 2})


@pytest.mark.parametrize("slurm,words", [
    ({"partiton": "gpu"}, ["slurm.partiton", "did you mean 'slurm.partition'"]),
    ({"nodes": 0}, ["slurm.nodes", ">= 1"]),
    ({"time": "1 day"}, ["slurm.time", "not a Slurm time"]),
    ({"time": "00:01:00", "signal_lead_s": 120}, ["slurm.signal_lead_s", "not shorter"]),
    ({"setup": "module load x"}, ["slurm.setup", "list of shell lines"]),
    ({"additional": {"Mail-Type": "END"}}, ["slurm.additional.Mail-Type"]),
    ("gpu", ["slurm", "SlurmOptions or a dict"]),
])
def test_bad_slurm_options(base_kwargs, slurm, words):
    with pytest.raises(ValueError) as exc:
        hpc_sft.sft(**base_kwargs, executor="slurm", slurm=slurm)
    for word in words:
        assert word in str(exc.value)


@pytest.mark.parametrize("text,minutes", [("30", 30), ("1:30", 2), ("02:00:00", 120), ("1-0", 1440),
                                          ("1-02:30", 1590), ("0-00:00:30", 1)])
def test_time_formats(text, minutes):
    from hpc_sft.config.slurm_options import time_to_minutes

    assert time_to_minutes(text) == minutes


def test_valid_call_builds_frozen_config(base_kwargs):
    config = build(**base_kwargs, random_seed=3)
    assert config.backend_kwargs == {"random_seed": 3}
    with pytest.raises(AttributeError):
        config.num_epochs = 5
