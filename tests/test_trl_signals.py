"""The trl backend's node under signals: a warning to the whole process group, a kill inside the stop save."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_sft.backends.trl import backend as tb
from hpc_sft.backends.trl import checkpoints as tc
from hpc_sft.backends.trl import launch as tl
from hpc_sft.rundir.layout import METRICS_FILE, result_from_disk

from tests.trl_helpers import cpu, run_kwargs, trl_config, weights

pytest.importorskip("trl", reason="trl is not installed")


def samples_logged(ckpt: Path) -> int:
    path = ckpt / METRICS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return max([row.get("samples_seen", 0) for row in rows] or [0])


def start_node_child(config, tmp_path, env=None) -> subprocess.Popen:
    """The training parent of one node with 2 CPU workers, in its own process group (as a Slurm step)."""
    import os

    launch_json = tl.launch_file(config, cpu(2))
    with open(tmp_path / "child.log", "w") as out:
        return subprocess.Popen([sys.executable, str(Path(__file__).parent / "trl_node_child.py"), str(launch_json)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})


def wait_for(predicate, child, tmp_path, timeout_s=300):
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert child.poll() is None and time.monotonic() < deadline, (tmp_path / "child.log").read_text()
        time.sleep(0.1)


def reference_run(tiny_model, tiny_data, tmp_path, **over) -> Path:
    ref = tmp_path / "ref"
    tb.TRLSFTBackend().execute_training(trl_config({"seed": 7}, **run_kwargs(tiny_model, tiny_data, ref, **over)),
                                        cpu(2))
    return ref


@pytest.mark.training
def test_signal_to_the_whole_process_group_saves_and_resumes_bit_identical(tiny_model, tiny_data, tmp_path,
                                                                            one_thread):
    """As Slurm signals every process of a step: torchrun and the workers must survive USR2, the parent
    turns it into a stop file, both ranks save the same step, and the rerun ends bit-identical."""
    import os
    import signal

    over = dict(num_epochs=2, effective_batch_size=8)
    ref = reference_run(tiny_model, tiny_data, tmp_path, **over)
    ckpt = tmp_path / "ckpt"
    config = trl_config({"seed": 7}, **run_kwargs(tiny_model, tiny_data, ckpt, **over))
    child = start_node_child(config, tmp_path)
    wait_for(lambda: samples_logged(ckpt) >= 80, child, tmp_path)
    os.killpg(child.pid, signal.SIGUSR2)
    assert child.wait(timeout=300) == 0, (tmp_path / "child.log").read_text()
    assert "hpc-sft child: signal SIGUSR2" in (tmp_path / "child.log").read_text()
    state, path = tb.TRLSFTBackend().progress(config)
    assert 80 <= state.samples_seen < 512 and state.global_step == state.samples_seen // 8, state
    assert sorted(p.name for p in path.glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert result_from_disk(ckpt).checkpoint_path is None  # interrupted: no final model yet
    assert not list(ckpt.glob(".hpc_sft_stop.*"))

    tb.TRLSFTBackend().execute_training(config, cpu(2))  # the rerun resumes from that checkpoint
    assert tb.TRLSFTBackend().progress(config)[0].global_step is None  # finished
    assert result_from_disk(ckpt).samples_seen == result_from_disk(ref).samples_seen == 512
    wa, wb = weights(ref), weights(ckpt)
    assert wa.keys() == wb.keys() and all(wa[name].equal(wb[name]) for name in wa)


@pytest.mark.training
def test_kill_during_the_signal_save_resumes_from_the_previous_complete_checkpoint(tiny_model, tiny_data, tmp_path,
                                                                                   one_thread):
    """SIGKILL (Slurm's end of grace) lands while the save a warning asked for is still being written."""
    import os
    import signal

    over = dict(num_epochs=2, effective_batch_size=8, save_samples=32)  # a checkpoint every 4 steps
    ref = reference_run(tiny_model, tiny_data, tmp_path, **over)
    ckpt = tmp_path / "ckpt"
    config = trl_config({"seed": 7}, **run_kwargs(tiny_model, tiny_data, ckpt, **over))
    child = start_node_child(config, tmp_path, {"HPC_SFT_FAULT_PAUSE_STOP_SAVE_S": "120"})
    wait_for(lambda: samples_logged(ckpt) >= 120, child, tmp_path)
    os.killpg(child.pid, signal.SIGUSR2)

    def torn():
        return [p for _, p in tc.checkpoints(ckpt) if (p / "trainer_state.json").is_file()
                and not (p / tc.MARKER).is_file()]

    def held():  # the paused save stays torn; a periodic save caught half-written does not (a busy machine)
        before = torn()
        time.sleep(2)
        return [p for p in torn() if p in before]

    wait_for(held, child, tmp_path)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    torn_step = int(torn()[0].name.split("-")[1])
    optimizer = torn()[0] / "optimizer.pt"  # the pause held the save open after its files; leave what a kill
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])  # inside torch.save leaves
    state, path = tb.TRLSFTBackend().progress(config)
    assert state.global_step < torn_step and state.global_step % 4 == 0, (state, torn_step)

    tb.TRLSFTBackend().execute_training(config, cpu(2))  # the rerun (its workers log to full_logs_global0)
    rerun_log = (ckpt / "full_logs_global0.log").read_text()
    assert f"checkpoint-{torn_step} is torn (no hpc_sft_complete.json" in rerun_log
    assert f"resuming from {path}" in rerun_log
    assert result_from_disk(ckpt).samples_seen == 512
    wa, wb = weights(ref), weights(ckpt)
    assert all(wa[name].equal(wb[name]) for name in wa)
    assert not list(ckpt.glob(".hpc_sft_stop.*"))
