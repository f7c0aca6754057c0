"""The real instructlab-training, on CPU, through sft(executor='local'): 1 process, 2 processes, pretraining."""
import json
import shutil

import pytest

import hpc_sft
from tests.helpers import tiny_sft_kwargs
from tests.loading import assert_loads_as_trained, newest_full_state

pytest.importorskip("instructlab.training", reason="instructlab-training is not installed")
pytestmark = pytest.mark.training


def losses(ckpt):
    lines = (ckpt / "training_params_and_metrics_global0.jsonl").read_text().splitlines()
    return [r["avg_loss"] for r in map(json.loads, lines) if "avg_loss" in r]


def digests(folder):
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))}


def test_one_process_trains_and_returns_a_result(tiny_model, tiny_data, tmp_path):
    result = hpc_sft.sft(**tiny_sft_kwargs(tiny_model, tiny_data, tmp_path / "ckpt"))
    assert isinstance(result, hpc_sft.TrainingResult)
    assert result.samples_seen == 256
    assert result.checkpoint_path == tmp_path / "ckpt" / "hf_format" / "samples_256"
    assert (result.checkpoint_path / "model.safetensors").is_file()
    assert (tmp_path / "ckpt" / "full_state" / "epoch_0" / "optimizer.bin").is_file()
    curve = losses(tmp_path / "ckpt")
    assert len(curve) == 16 and curve[-1] < curve[0] - 0.3, curve
    assert result.metrics_file.name == "training_params_and_metrics_global0.jsonl"
    assert_loads_as_trained(result.checkpoint_path, newest_full_state(tmp_path / "ckpt"), tiny_model)


def test_two_processes_synchronise_gradients(tiny_model, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_SFT_PARAM_DIGEST_DIR", str(tmp_path / "digests"))
    result = hpc_sft.sft(**tiny_sft_kwargs(tiny_model, tiny_data, tmp_path / "ckpt"), nproc_per_node=2)
    assert result.samples_seen == 256
    found = digests(tmp_path / "digests")
    assert set(found) == {"rank0.json", "rank1.json"}
    assert found["rank0.json"]["world_size"] == 2
    assert found["rank0.json"]["sha256"] == found["rank1.json"]["sha256"]
    assert_loads_as_trained(result.checkpoint_path, newest_full_state(tmp_path / "ckpt"), tiny_model)


def test_pretraining_mode(tiny_model, tmp_path):
    from hpc_sft.tiny import write_tiny_pretraining_dataset

    data = write_tiny_pretraining_dataset(tmp_path / "docs.jsonl", n=60)
    result = hpc_sft.sft(**tiny_sft_kwargs(tiny_model, data, tmp_path / "ckpt"), is_pretraining=True, block_size=128)
    assert result.samples_seen and result.samples_seen > 60  # documents are cut into several 128-token blocks
    assert_loads_as_trained(result.checkpoint_path, newest_full_state(tmp_path / "ckpt"), tiny_model)


def test_training_failure_is_runtime_error_naming_the_log(tiny_model, tiny_data, tmp_path):
    # A real failure inside the torchrun worker: the weights file is cut short (the tokenizer still loads).
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match="Read the log: .*full_logs_global0.log"):
        hpc_sft.sft(**tiny_sft_kwargs(broken, tiny_data, tmp_path / "ckpt"))


def test_backend_values_checked_against_real_classes_before_training(tiny_model, tiny_data, tmp_path):
    with pytest.raises(ValueError, match="validation_frequency|validation_split"):
        hpc_sft.sft(**tiny_sft_kwargs(tiny_model, tiny_data, tmp_path / "ckpt"), validation_split=0.1)
    with pytest.raises(ValueError, match="lora.*rejected by instructlab-training"):
        hpc_sft.sft(**tiny_sft_kwargs(tiny_model, tiny_data, tmp_path / "ckpt"), lora={"rank": "many"})
    assert not (tmp_path / "ckpt").exists()
