"""The trl backend trains for real on CPU: it learns, resumes bit-identical, 2 processes match 1, LoRA merges."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from hpc_sft.backends.trl import backend as tb
from hpc_sft.rundir.layout import METRICS_FILE, result_from_disk

from tests.loading import assert_loads_as_trained, newest_trl_checkpoint
from tests.trl_helpers import cpu, losses, run_kwargs, trl_config, weights

pytest.importorskip("trl", reason="trl is not installed")


@pytest.mark.training
def test_real_cpu_run_writes_hf_format_and_learns(tiny_model, tiny_data, tmp_path, one_thread):
    ckpt = tmp_path / "ckpt"
    config = trl_config({"seed": 1}, **run_kwargs(tiny_model, tiny_data, ckpt))
    backend = tb.TRLSFTBackend()
    backend.check_values(config)
    backend.execute_training(config, cpu())
    result = result_from_disk(ckpt)
    assert result.samples_seen == 256 and result.checkpoint_path == ckpt / "hf_format" / "samples_256"
    assert (result.checkpoint_path / "config.json").is_file()
    assert (result.checkpoint_path / "tokenizer_config.json").is_file()
    assert result.metrics_file == ckpt / METRICS_FILE
    seen = losses(ckpt)
    assert len(seen) == 16 and seen[-1] < seen[0]
    assert_loads_as_trained(result.checkpoint_path, newest_trl_checkpoint(ckpt), tiny_model)


def stop_after(k):
    """A TrainerCallback that saves and stops after optimizer step k, as a kill after that save would."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == k:
                control.should_save = True
                control.should_training_stop = True

    return StopAfter()


@pytest.mark.training
def test_resume_skips_torn_checkpoint_and_is_bit_identical(tiny_model, small_data, tmp_path, one_thread, caplog):
    # 64 samples, batch 8 -> 8 steps per epoch, 2 epochs; a checkpoint every 16 samples (2 steps)
    over = dict(num_epochs=2, effective_batch_size=8, save_samples=16, keep_full_states=0)  # keep every one
    a = tmp_path / "a"
    config_a = trl_config({"seed": 5}, **run_kwargs(tiny_model, small_data, a, **over))
    tb.TRLSFTBackend().execute_training(config_a, cpu())

    b = tmp_path / "b"
    config_b = trl_config({"seed": 5}, **run_kwargs(tiny_model, small_data, b, **over))
    tb.TRLSFTBackend(callbacks=[stop_after(11)]).execute_training(config_b, cpu())  # mid-epoch 2
    assert result_from_disk(b).samples_seen is None  # stopped early: no final model
    assert {p.name for p in b.glob("checkpoint-*")} >= {"checkpoint-8", "checkpoint-10", "checkpoint-11"}
    (b / "checkpoint-11" / "optimizer.pt").unlink()  # torn: the resume must fall back to checkpoint-10
    with caplog.at_level(logging.WARNING, logger="hpc_sft.trl"):
        tb.TRLSFTBackend().execute_training(config_b, cpu())
    assert "checkpoint-11 is torn (missing optimizer.pt)" in caplog.text
    assert f"resuming from {b / 'checkpoint-10'}" in caplog.text
    rows = [json.loads(line) for line in (b / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [*range(1, 12), *range(11, 17)]  # not from scratch

    assert result_from_disk(a).samples_seen == result_from_disk(b).samples_seen == 128
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert wa[name].equal(wb[name]), name


@pytest.mark.training
def test_periodic_saves_keep_only_the_newest_checkpoint_and_change_nothing(tiny_model, small_data, tmp_path,
                                                                           one_thread, caplog):
    over = dict(num_epochs=2, effective_batch_size=8)
    plain, periodic = tmp_path / "plain", tmp_path / "periodic"
    tb.TRLSFTBackend().execute_training(trl_config({"seed": 3}, **run_kwargs(
        tiny_model, small_data, plain, full_state_every_min=0, keep_full_states=0, **over)), cpu())
    with caplog.at_level(logging.WARNING, logger="hpc_sft.trl"):  # every step is due: 1e-4 min
        tb.TRLSFTBackend().execute_training(trl_config({"seed": 3}, **run_kwargs(
            tiny_model, small_data, periodic, full_state_every_min=1e-4, **over)), cpu())
    assert caplog.text.count("periodic save of checkpoint-") >= 12, caplog.text[-3000:]
    assert sorted(p.name for p in plain.glob("checkpoint-*")) == ["checkpoint-16", "checkpoint-8"]
    assert [p.name for p in periodic.glob("checkpoint-*")] == ["checkpoint-16"]  # keep_full_states=1
    marker = json.loads((periodic / "checkpoint-16" / "hpc_sft_complete.json").read_text())
    assert marker["save_seconds"] > 0
    wa, wb = weights(plain), weights(periodic)
    assert wa.keys() == wb.keys() and all(wa[name].equal(wb[name]) for name in wa)


@pytest.mark.training
def test_two_processes_on_cpu_match_one(tiny_model, small_data, tmp_path, one_thread):
    """torchrun + gloo DDP: gradients are synchronised (a rank training alone would drift far more)."""
    import torch

    over = dict(num_epochs=1, effective_batch_size=8)
    runs = {}
    for nproc in (1, 2):
        ckpt = tmp_path / f"n{nproc}"
        config = trl_config({"seed": 2}, **run_kwargs(tiny_model, small_data, ckpt, **over))
        # 4 per device in both (1 process: 4 x 2 accumulation; 2 processes: 4 x 1 each): same micro-batches
        config = dataclasses.replace(config, max_tokens_per_gpu=4 * config.max_seq_len)
        tb.TRLSFTBackend().execute_training(config, cpu(nproc))
        assert result_from_disk(ckpt).samples_seen == 64
        runs[nproc] = weights(ckpt)
    assert (tmp_path / "n2" / "full_logs_global0.log").is_file()
    for name, value in runs[1].items():
        assert torch.allclose(value, runs[2][name], rtol=0, atol=1e-6), name


@pytest.mark.training
@pytest.mark.parametrize("nproc", [1, 2])
def test_lora_run_saves_a_merged_loadable_model(tiny_model, small_data, tmp_path, one_thread, nproc):
    ckpt = tmp_path / "lora"
    config = trl_config({"lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"]},
                        **run_kwargs(tiny_model, small_data, ckpt, effective_batch_size=8))
    tb.TRLSFTBackend().check_values(config)
    tb.TRLSFTBackend().execute_training(config, cpu(nproc))
    trained = weights(ckpt)
    assert result_from_disk(ckpt).samples_seen == 64
    assert not any("lora" in name for name in trained)  # merged into the base weights
    from safetensors.torch import load_file

    base = load_file(Path(tiny_model) / "model.safetensors")
    changed = {name for name in trained if not trained[name].equal(base[name])}
    assert changed and all(("q_proj" in n or "v_proj" in n) for n in changed)
