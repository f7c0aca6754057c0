"""Pure requeue decisions, the status record, torn-state quarantine and the one-writer lock."""
import json
import os

import pytest

from hpc_sft.backends.instructlab import checkpoints
from hpc_sft.requeue import Decision, StateFacts, decide, decide_in_step
from hpc_sft.rundir import lock as ckpt_lock
from hpc_sft.rundir.layout import LOCK_FILE
from hpc_sft.rundir.status import read_status, record_stop


def test_finished_only_after_last_epoch_end_save():
    assert decide(StateFacts(1, 512, None), 2, 0, 5, [], "x").action == "finish"
    assert decide(StateFacts(1, 400, 9), 2, 0, 5, [], "x").action == "requeue"  # mid-epoch save of the last epoch
    assert decide(StateFacts(0, 256, None), 2, 0, 5, [], "x").action == "requeue"
    assert decide(None, 2, 0, 5, [], "x").action == "requeue"


def test_requeue_budget():
    decision = decide(StateFacts(0, 100, 3), 2, 3, 3, [], "interrupted")
    assert decision.action == "give_up" and "max_requeues=3 is used up" in decision.reason
    assert decide(StateFacts(0, 100, 3), 2, 2, 3, [], "interrupted").action == "requeue"


def test_no_progress_guard():
    stops = [{"samples_seen": 100}, {"samples_seen": 100}]
    decision = decide(StateFacts(0, 100, 3), 2, 2, 10, stops, "interrupted")
    assert decision.action == "give_up" and "no progress in the last two runs" in decision.reason
    assert decide(StateFacts(0, 140, 4), 2, 2, 10, stops, "x").action == "requeue"
    assert decide(StateFacts(0, 100, 3), 2, 1, 10, stops[:1], "x").action == "requeue"


def test_status_record(tmp_path):
    record_stop(tmp_path, "7", 0, Decision("requeue", "interrupted"), StateFacts(0, 64, 4), "/x/epoch_0")
    status = record_stop(tmp_path, "7", 1, Decision("finish", "done"), StateFacts(1, 512, None), "/x/epoch_1")
    assert status["outcome"] == "finished" and status["restarts"] == 1
    assert [s["samples_seen"] for s in read_status(tmp_path)["stops"]] == [64, 512]


def make_state(root, epoch, *, drop=None, meta=True):
    import torch

    path = root / "full_state" / f"epoch_{epoch}"
    path.mkdir(parents=True)
    for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl", "model.safetensors"):
        if name != drop:
            (path / name).write_bytes(b"x" * 10)
    if meta:
        torch.save({"current_epoch": epoch, "samples_seen": 10 * (epoch + 1)}, path / "training_metadata.json")
    return path


def test_torn_states_are_quarantined_and_resume_falls_back(tmp_path):
    make_state(tmp_path, 0)
    make_state(tmp_path, 1, drop="scheduler.bin")
    torn = make_state(tmp_path, 2, meta=False)
    (torn / "training_metadata.json").write_bytes(b"PK\x03\x04 torn")
    messages = []
    moved = checkpoints.quarantine_torn(tmp_path, messages.append)
    assert [p.name.split("-")[0] for p in moved] == ["epoch_2", "epoch_1"]
    assert all(p.parent == tmp_path / "quarantine" for p in moved)
    assert [p.name for p in checkpoints.full_states(tmp_path)] == ["epoch_0"]
    path, meta = checkpoints.newest_state(tmp_path)
    assert path.name == "epoch_0" and meta["samples_seen"] == 10
    assert "missing scheduler.bin" in messages[1] and "unreadable" in messages[0]


def test_marker_sizes_are_checked(tmp_path):
    path = make_state(tmp_path, 0)
    (path / checkpoints.MARKER).write_text(json.dumps({"files": {"optimizer.bin": 11}}))
    assert "wrong size" in checkpoints.state_problem(path)


def test_lock_refuses_a_second_live_writer(tmp_path):
    ckpt_lock.acquire(tmp_path, None)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"job_id": None, "host": os.uname().nodename,
                                                        "pid": os.getppid()}))
    with pytest.raises(RuntimeError, match="is in use by pid"):
        ckpt_lock.acquire(tmp_path, None)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"job_id": None, "host": os.uname().nodename,
                                                        "pid": 2 ** 22 + 12345}))
    ckpt_lock.acquire(tmp_path, None)  # a dead owner's lock is taken over
    assert ckpt_lock.holder(tmp_path)["pid"] == os.getpid()
    ckpt_lock.release(tmp_path)
    assert ckpt_lock.holder(tmp_path) is None


def test_grace_and_lead_are_checked_against_a_measured_save():
    from hpc_sft.executors.slurm.check import seconds, timing_warnings

    assert (seconds("00:00:30"), seconds("30"), seconds("1-00:00:05"), seconds("05:00")) == (30, 30, 86405, 300)
    assert timing_warnings(120, 30, None) == []  # nothing measured yet
    assert timing_warnings(120, 30, 10.0) == []
    grace, lead = timing_warnings(15, 5, 12.5)
    assert "GraceTime (5s) is shorter than a measured full-state save (12.5s)" in grace
    assert "signal_lead_s=15 is less than twice" in lead and "at least 26" in lead


def test_measured_save_comes_from_the_markers(tmp_path):
    path = make_state(tmp_path, 0)
    assert checkpoints.measured_save(tmp_path) == (None, None)
    (path / checkpoints.MARKER).write_text(json.dumps({"files": {"a": 10, "b": 5}, "save_seconds": 3.25}))
    assert checkpoints.measured_save(tmp_path) == (3.25, 15)


def test_a_checkpoint_filesystem_without_room_for_the_next_state_is_warned_about(tmp_path):
    import shutil

    from hpc_sft.executors.slurm.check import disk_warnings

    free = shutil.disk_usage(tmp_path).free
    assert disk_warnings(tmp_path / "not" / "yet", None, 1) == []  # nothing measured: nothing said
    assert disk_warnings(tmp_path / "not" / "yet", free // 4, 1) == []
    warned = disk_warnings(tmp_path / "not" / "yet", free, 1)
    assert len(warned) == 1 and f"{tmp_path} has" in warned[0] and "keep_full_states=1" in warned[0]


def test_a_step_in_the_users_allocation_stops_instead_of_requeueing():
    """executor='srun': no budget, no loop guard, nobody requeues: finished, or stopped with the state saved."""
    assert decide_in_step(StateFacts(1, 2400, None), 2, "interrupted").action == "finish"
    stop = decide_in_step(StateFacts(0, 320, 20), 2, "interrupted (SIGUSR2)")
    assert stop.action == "stop" and "stopped at 320 samples" in stop.reason
    assert "run the same command again" in stop.reason
    assert decide_in_step(None, 2, "interrupted").action == "stop"


def test_a_stopped_run_reads_stopped(tmp_path):
    status = record_stop(tmp_path, "7", 0, Decision("stop", "saved"), StateFacts(0, 16, 1), "full_state/epoch_0")
    assert status["outcome"] == "stopped" and read_status(tmp_path)["stops"][-1]["action"] == "stop"


def test_full_state_metadata_is_read_without_importing_torch(tmp_path):
    """Node 0 reads it before every restart: importing torch for a dict of three numbers cost 1.5 s there."""
    import subprocess
    import sys

    import torch

    plain, tensor = tmp_path / "plain", tmp_path / "tensor"
    for folder, meta in ((plain, {"current_epoch": 1, "samples_seen": 1312, "global_step": 7}),
                         (tensor, {"current_epoch": 0, "samples_seen": torch.tensor(16)})):
        folder.mkdir()
        torch.save(meta, folder / "training_metadata.json")
    code = ("import sys; from pathlib import Path; from hpc_sft.backends.instructlab.checkpoints import "
            f"read_metadata; print(read_metadata(Path({str(plain)!r})), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "{'current_epoch': 1, 'samples_seen': 1312, 'global_step': 7} False"
    assert checkpoints.read_metadata(tensor)["samples_seen"] == 16  # more than plain values: torch reads it
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "training_metadata.json").write_bytes((plain / "training_metadata.json").read_bytes()[:200])
    with pytest.raises(Exception):
        checkpoints.read_metadata(torn)
