"""The trl backend's checkpoints: completeness, the callback's stop and marker, status and progress, the launch file."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hpc_sft.backends.trl import checkpoints as tc
from hpc_sft.backends.trl import launch as tl
from hpc_sft.backends.trl import train as tt
from hpc_sft.launch import Launch

from tests.trl_helpers import trl_config

pytest.importorskip("trl", reason="trl is not installed")


# ---------------------------------------------------------------- checkpoints

def fake_checkpoint(root: Path, step: int, state=None) -> Path:
    """A checkpoint-N as the trl backend leaves it after a finished save (marker included)."""
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps(state or {"global_step": step}))
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state_1.pth"):
        (path / name).write_text("x" * 10)
    tc.mark_complete(path, step)
    return path


def test_latest_complete_checkpoint_skips_torn_ones(tmp_path):
    fake_checkpoint(tmp_path, 2)
    good = fake_checkpoint(tmp_path, 10)
    (fake_checkpoint(tmp_path, 12) / "rng_state_1.pth").unlink()  # another rank's file is gone
    (fake_checkpoint(tmp_path, 14) / "optimizer.pt").write_text("x")  # truncated
    tc.drop_marker(fake_checkpoint(tmp_path, 16))  # the save never finished
    (tmp_path / "checkpoint-18.tmp").mkdir()
    said = []
    assert tc.latest_complete_checkpoint(tmp_path, said.append) == good
    assert len(said) == 3, said
    assert "checkpoint-16" in said[0] and "no hpc_sft_complete.json" in said[0]
    assert "checkpoint-14" in said[1] and "optimizer.pt has 1 bytes, expected 10" in said[1]
    assert "checkpoint-12" in said[2] and "missing rng_state_1.pth" in said[2]
    assert tc.latest_complete_checkpoint(tmp_path / "absent") is None


def test_a_checkpoint_without_optimizer_state_is_not_resumable(tmp_path):
    path = fake_checkpoint(tmp_path, 4)
    (path / "optimizer.pt").unlink()
    tc.mark_complete(path, 4)  # e.g. save_only_model: complete, but no optimizer to resume
    assert tc.checkpoint_problem(path) == "missing optimizer.pt"


def callback_env(tmp_path, base_kwargs, step=3):
    from types import SimpleNamespace

    config = trl_config({}, **{**base_kwargs, "ckpt_output_dir": str(tmp_path)})
    args = SimpleNamespace(device="cpu", output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=step, is_world_process_zero=True, max_steps=16, epoch=0.5)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    return tt.hpc_sft_callback(config), args, state, control


def test_callback_saves_and_stops_on_a_signal_in_this_process(tmp_path, base_kwargs, monkeypatch):
    import signal
    from types import SimpleNamespace

    from hpc_sft import signals

    monkeypatch.setattr(signals, "_current", None)
    callback, args, state, control = callback_env(tmp_path, base_kwargs)
    callback.on_step_end(args, state, control)
    assert not control.should_save and not control.should_training_stop
    monkeypatch.setattr(signals, "_current", SimpleNamespace(received=signal.SIGUSR2.name))
    callback.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop
    callback.on_epoch_end(args, state, control)  # the epoch-end save would write the same step again
    assert not control.should_save


def test_callback_stops_on_the_parents_stop_file(tmp_path, base_kwargs, monkeypatch):
    from hpc_sft import signals

    monkeypatch.setattr(signals, "_current", None)
    stop = tmp_path / "stop"
    monkeypatch.setenv(tt.STOP_FILE_ENV, str(stop))
    callback, args, state, control = callback_env(tmp_path, base_kwargs)
    callback.on_step_end(args, state, control)
    assert not control.should_training_stop
    stop.write_text("SIGUSR2")
    callback.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop


def test_callback_marks_a_checkpoint_complete_only_after_its_save(tmp_path, base_kwargs):
    callback, args, state, control = callback_env(tmp_path, base_kwargs, step=5)
    path = fake_checkpoint(tmp_path, 5)
    control.should_save = True
    callback.on_step_end(args, state, control)  # a save of step 5 starts: the old marker goes first
    assert tc.checkpoint_problem(path) == "no hpc_sft_complete.json: the save did not finish"
    callback.on_save(args, state, control)
    assert tc.checkpoint_problem(path) is None


def test_status_shows_the_newest_checkpoint_before_the_final_model(tmp_path):
    from hpc_sft.progress import run_status

    assert run_status(tmp_path)["last_checkpoint"] is None
    fake_checkpoint(tmp_path, 6)
    newest = fake_checkpoint(tmp_path, 12)
    assert run_status(tmp_path)["last_checkpoint"] == str(newest)


def test_progress_facts_for_the_requeue_decision(tmp_path):
    from hpc_sft.requeue import StateFacts, decide

    assert tc.progress(tmp_path, 8, 2) == (None, None)
    fake_checkpoint(tmp_path, 6, {"global_step": 6, "max_steps": 16, "epoch": 0.75})
    assert tc.progress(tmp_path, 8, 2)[0] == StateFacts(0, 48, 6)
    last = fake_checkpoint(tmp_path, 16, {"global_step": 16, "max_steps": 16, "epoch": 2.0})
    facts, path = tc.progress(tmp_path, 8, 2)
    assert facts == StateFacts(2, 128, 16) and path == last  # last step saved, final model not yet written
    assert decide(facts, 2, 0, 3, [], "x").action == "requeue"
    final = tmp_path / "hf_format" / "samples_128"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    facts, _ = tc.progress(tmp_path, 8, 2)
    assert facts == StateFacts(1, 128, None) and decide(facts, 2, 0, 3, [], "x").action == "finish"


def test_torchrun_command_shapes(tmp_path):
    cmd = tl.torchrun_command(Launch(nproc_per_node=2, nnodes=2, node_rank=1, rdzv_id=5,
                                     rdzv_endpoint="n1:29500"), tmp_path / "a.json")
    assert cmd[0] == "torchrun" and "--rdzv-endpoint=n1:29500" in cmd and "--node-rank=1" in cmd
    assert cmd[-2:] == [str(tl.WORKER), str(tmp_path / "a.json")]
    assert "--standalone" in tl.torchrun_command(Launch(nproc_per_node=2), tmp_path / "a.json")


def test_launch_file_round_trip(base_kwargs):
    config = trl_config({"seed": 3}, **base_kwargs)
    launch = Launch(nproc_per_node=2, device="cpu", env=(("A", "1"),))
    back_config, back_launch = tl.read_launch_file(tl.launch_file(config, launch))
    assert back_launch == launch
    assert dataclasses.replace(back_config, slurm=config.slurm) == config
