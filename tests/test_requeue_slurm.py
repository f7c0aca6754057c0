"""Requeue-safe runs on the real cluster: preemption storm, time limit, loops; bit-identical to uninterrupted."""
import json
import os
import signal
import subprocess

import pytest

from hpc_sft.executors.slurm import client as slurm_client
from hpc_sft.executors.slurm.node_task import PLAN_TAG
from hpc_sft.executors.slurm.watchdog import MARK
from hpc_sft.rundir.status import read_status
from tests.slurm_helpers import final_weights, plan_hosts, preempt_at, samples_now, submit, wait_until, worker_pid
from tests.loading import assert_loads_as_trained, newest_full_state

pytestmark = [pytest.mark.slurm, pytest.mark.training]


def test_preemption_storm_resumes_bit_identical(slurm_cluster, tiny_model, data_1200, reference_1200, tmp_path,
                                                monkeypatch):
    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as mp:  # each step 0.1 s longer: the last preemption lands 30 steps before the end
        mp.setenv("HPC_SFT_FAULT_STEP_DELAY_S", "0.1")
        job = submit(tiny_model, data_1200, ckpt, 2)
    # mid epoch 0; early in epoch 1 (the 2nd epoch of the resumed process); late in epoch 1
    preempt_at(job, (300, 1300, 1900), lambda: samples_now(ckpt))
    result = job.wait(timeout_s=600)
    assert result.restarts >= 3
    assert result.samples_seen == reference_1200.samples_seen == 2400
    assert final_weights(result) == final_weights(reference_1200)
    assert_loads_as_trained(result.checkpoint_path, newest_full_state(ckpt), tiny_model)
    stops = read_status(ckpt)["stops"]
    assert [s["action"] for s in stops][-1] == "finish" and sum(s["action"] == "requeue" for s in stops) >= 3
    resumed_in_epoch_1 = [s for s in stops if s["action"] == "requeue" and 1200 < s["samples_seen"] < 2400]
    assert len(resumed_in_epoch_1) >= 2, stops


def test_time_limit_requeues_itself_and_finishes(slurm_cluster, tiny_model, data_1200, reference_1200, tmp_path,
                                                 monkeypatch):
    # Slurm sends the warning once now + lead + 30 s (its PERIODIC_TIMEOUT) reaches the end, checking every
    # 30 s: with 2 min and a 50 s lead it comes 40-70 s in. Each of the 150 optimizer steps waits 0.47 s
    # (fault injection): the waits alone take 70.5 s, so the first run cannot finish before the warning,
    # however fast the machine; the second usually finishes (about 80 s of training in all).
    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as mp:
        mp.setenv("HPC_SFT_FAULT_STEP_DELAY_S", "0.47")
        job = submit(tiny_model, data_1200, ckpt, 2, {"time": "00:02:00", "signal_lead_s": 50})
    result = job.wait(timeout_s=900)
    assert job.state == "COMPLETED"  # no task ended by a late warning on its way out
    assert result.restarts >= 1
    assert result.samples_seen == 2400 and final_weights(result) == final_weights(reference_1200)
    assert_loads_as_trained(result.checkpoint_path, newest_full_state(ckpt), tiny_model)
    stops = read_status(ckpt)["stops"]
    assert all(s["action"] == "requeue" for s in stops[:-1]) and stops[-1]["action"] == "finish"
    assert all("checkpoint signal" in s["reason"] for s in stops[:-1])


def test_requeue_budget_stops_the_job(slurm_cluster, tiny_model, data_1200, tmp_path):
    ckpt = tmp_path / "ckpt"
    job = submit(tiny_model, data_1200, ckpt, 1, {"max_requeues": 0})
    wait_until(lambda: samples_now(ckpt) >= 160, 300, "training under way")
    subprocess.run(["scancel", "-s", "USR2", job.job_id], check=True)  # a warning, as before a time limit
    with pytest.raises(RuntimeError, match="failed"):
        job.wait(timeout_s=300)
    status = read_status(ckpt)
    assert status["outcome"] == "gave up" and "max_requeues=0 is used up" in status["stops"][-1]["reason"]
    assert 160 <= status["stops"][-1]["samples_seen"] < 2400
    assert "max_requeues=0 is used up" in job.log_paths(0)[1].read_text() + job.log_paths(0)[0].read_text()


def plan_lines(job) -> int:
    path = job.log_paths(0)[0]
    return path.read_text().count(PLAN_TAG) if path.is_file() else 0


def test_no_progress_guard_stops_a_loop(slurm_cluster, tiny_model, data_1200, tmp_path):
    """Every run is interrupted right after it starts (as by a cluster that keeps preempting it at once)."""
    ckpt = tmp_path / "ckpt"
    job = submit(tiny_model, data_1200, ckpt, 1)
    for run in range(1, 4):
        wait_until(lambda: plan_lines(job) >= run or job.done(), 120, f"start of run {run}")
        if job.done():
            break
        subprocess.run(["scancel", "-s", "USR2", job.job_id], check=True)
        wait_until(lambda: (slurm_client.slurm_state(job.job_id)["restarts"] or 0) >= run or job.done(), 120,
                   f"end of run {run}")
    with pytest.raises(RuntimeError, match="failed"):
        job.wait(timeout_s=120)
    status = read_status(ckpt)
    assert status["outcome"] == "gave up", status
    assert "no progress in the last two runs" in status["stops"][-1]["reason"]
    assert [s["action"] for s in status["stops"]] == ["requeue", "requeue", "give_up"]


def test_kill_during_a_save_resumes_from_the_previous_complete_state(
        slurm_cluster, tiny_model, data_1200, reference_1200, tmp_path, monkeypatch):
    ckpt, staged = tmp_path / "ckpt", tmp_path / "ckpt" / ".hpc_sft_staging" / "full_state"
    monkeypatch.setenv("HPC_SFT_FAULT_PAUSE_BEFORE_PUBLISH_S", "8")  # every save waits before publishing
    job = submit(tiny_model, data_1200, ckpt, 2)  # world size 2, like the reference
    monkeypatch.delenv("HPC_SFT_FAULT_PAUSE_BEFORE_PUBLISH_S")
    wait_until(lambda: (ckpt / "full_state" / "epoch_0" / "hpc_sft_complete.json").is_file(), 300, "epoch 0 state")
    wait_until(lambda: samples_now(ckpt) >= 1300, 120, "epoch 1 under way")
    subprocess.run(["scancel", "-s", "USR2", job.job_id], check=True)  # an on-demand save starts...
    wait_until(lambda: (staged / "epoch_1").is_dir(), 60, "the staged save")
    subprocess.run(["scancel", "-s", "KILL", job.job_id], check=True)  # ...and is killed before it is published
    wait_until(lambda: not subprocess.run(["squeue", "-h", "-j", job.job_id], capture_output=True,
                                          text=True).stdout.strip(), 60, "the killed job to leave the queue")
    assert not (ckpt / "full_state" / "epoch_1").exists() and (staged / "epoch_1").is_dir()
    again = submit(tiny_model, data_1200, ckpt, 2)  # a new job on the same ckpt_output_dir
    result = again.wait(timeout_s=600)
    assert result.samples_seen == 2400 and final_weights(result) == final_weights(reference_1200)
    log = again.log_paths(0)[0].read_text() + (ckpt / "full_logs_global0.log").read_text()
    assert "deleted the torn staged state epoch_1" in log


def test_a_hung_worker_is_named_and_its_node_left_behind(slurm_cluster, tiny_model, data_1200, reference_1200,
                                                         tmp_path, monkeypatch):
    """SIGSTOP one worker on the second node mid-epoch: the watchdog names it, the job requeues without
    that node and ends with the weights of an uninterrupted run."""
    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as mp:
        mp.setenv("HPC_SFT_FAULT_STEP_DELAY_S", "0.1")
        job = submit(tiny_model, data_1200, ckpt, 2, {"hang_timeout_s": 15})
    wait_until(lambda: (ckpt / "full_state" / "epoch_0" / "hpc_sft_complete.json").is_file(), 300, "epoch 0 state")
    wait_until(lambda: samples_now(ckpt) >= 1400, 120, "epoch 1 under way")
    pid = worker_pid(ckpt, 1)
    assert pid, "no worker of node 1 found"
    os.kill(pid, signal.SIGSTOP)
    result = job.wait(timeout_s=600)
    assert result.restarts >= 1 and result.samples_seen == 2400
    assert final_weights(result) == final_weights(reference_1200)
    stop = read_status(ckpt)["stops"][0]
    assert stop["action"] == "requeue" and stop["reason"].startswith("hang: no progress for"), stop
    node1 = job.log_paths(1)[0].read_text()
    host = json.loads(next(line for line in node1.splitlines() if line.startswith(PLAN_TAG))[len(PLAN_TAG):])["host"]
    assert f"stuck: rank 1 (pid {pid}) on node 1 ({host}) is stopped (state T)" in stop["reason"], stop
    runs = plan_hosts(job)  # whichever two nodes the first run got (earlier tests may have left some busy)
    assert len(runs[0]) == 2 and host in runs[0] and host not in runs[1], runs
    assert f"{MARK} on node 1 ({host})" in node1 and f"{MARK} stacks of rank 1 (pid {pid}):\n(no answer)" in node1
    node0 = job.log_paths(0)[0].read_text()
    # whichever node noticed first, the other dumps its stacks too before the processes are ended
    assert f"{MARK} stacks of rank 0" in node0 and "File " in node0.split(f"{MARK} stacks of rank 0")[1][:4000], \
        node0[-4000:]
    shown = subprocess.run(["scontrol", "show", "job", job.job_id], capture_output=True, text=True).stdout
    assert f"ExcNodeList={host}" in shown, shown
