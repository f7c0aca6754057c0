"""Sites that forbid requeue, offline: the decision to resubmit, reading Requeue=0, the chain in the status record."""
from pathlib import Path

from hpc_sft.executors.slurm import client
from hpc_sft.executors.slurm.executor import sweep_jobs
from hpc_sft.executors.slurm.job import cancel_sweep, current_job
from hpc_sft.requeue import StateFacts, decide
from hpc_sft.rundir import lock as ckpt_lock
from hpc_sft.rundir.status import (cancelled_chains, chain_of, first_of_chain, read_status, record_cancelled,
                                   record_successor)

RECORDED = Path(__file__).parent / "fixtures" / "slurm-22.05"
MID = StateFacts(epoch=0, samples_seen=300, global_step=37)


def test_a_job_that_cannot_be_requeued_is_resubmitted_within_the_same_budget():
    resubmit = decide(MID, 2, restarts=1, max_requeues=3, stops=[], why="interrupted", can_requeue=False)
    assert resubmit.action == "resubmit" and "300 samples" in resubmit.reason
    assert decide(MID, 2, 1, 3, [], "interrupted", can_requeue=True).action == "requeue"
    spent = decide(MID, 2, restarts=3, max_requeues=3, stops=[], why="interrupted", can_requeue=False)
    assert spent.action == "give_up" and "max_requeues=3" in spent.reason
    done = StateFacts(epoch=1, samples_seen=2400, global_step=None)
    assert decide(done, 2, 0, 3, [], "interrupted", can_requeue=False).action == "finish"


def test_requeue_flag_is_read_from_real_scontrol_output():
    assert client.requeue_allowed((RECORDED / "scontrol-show-job-noreq.txt").read_text()) is False
    assert client.requeue_allowed((RECORDED / "scontrol-show-job-running.txt").read_text()) is True


def test_the_chain_is_followed_from_any_of_its_jobs(tmp_path):
    assert chain_of(tmp_path, "7") == ["7"] and current_job("7", tmp_path) == "7"
    record_successor(tmp_path, ("7", "9"))
    record_successor(tmp_path, ("7", "9", "12"))
    assert chain_of(tmp_path, "7") == ["7", "9", "12"] and chain_of(tmp_path, "9") == ["9", "12"]
    assert current_job("7", tmp_path) == "12" and first_of_chain(tmp_path, "12") == "7"
    assert chain_of(tmp_path, "5") == ["5"]  # a job of an earlier run in the same directory


def test_cancelled_chains_are_recorded_without_touching_the_status(tmp_path):
    record_successor(tmp_path, ("7", "9"))
    record_cancelled(tmp_path, "7")
    record_cancelled(tmp_path, "7")
    assert cancelled_chains(tmp_path) == ["7"] and read_status(tmp_path)["chain"] == ["7", "9"]


def test_the_lock_is_handed_to_the_next_job(tmp_path):
    ckpt_lock.acquire(tmp_path, "7")
    ckpt_lock.hand_over(tmp_path, "9")
    assert ckpt_lock.holder(tmp_path)["job_id"] == "9"


def test_cancelling_a_sweep_marks_every_task_and_follows_a_resubmitted_task(tmp_path, monkeypatch):
    """A task of a sweep at a site without requeue goes on outside its array: cancel must reach that job, and
    no task's node 0 may queue another (offline: scancel cannot reach a cluster here, and that is ignored)."""
    (tmp_path / "empty.conf").touch()  # scancel fails at once (a missing file, it retries for a minute)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "empty.conf"))
    dirs = [tmp_path / "lr_1e-3", tmp_path / "lr_1e-4"]
    for folder in dirs:
        folder.mkdir()
    record_successor(dirs[0], ("500_0", "512"))  # task 0 was preempted and resubmitted as job 512
    cancelled = cancel_sweep(["500"], [("500_0", dirs[0]), ("500_1", dirs[1])])
    assert cancelled == ["500", "512"]
    assert cancelled_chains(dirs[0]) == ["500_0"] and cancelled_chains(dirs[1]) == ["500_1"]


def test_a_sweeps_accounting_counts_a_resubmitted_tasks_later_jobs(tmp_path):
    dirs = [tmp_path / "lr_1e-3", tmp_path / "lr_1e-4"]
    for folder in dirs:
        folder.mkdir()
    record_successor(dirs[0], ("500_0", "512", "530"))  # task 0 went on as jobs 512, then 530
    rec = {"job_id": "500", "arrays": ["500"], "tasks": [{"job_id": "500_0", "dir": str(dirs[0])},
                                                         {"job_id": "500_1", "dir": str(dirs[1])}]}
    ids, dir_of = sweep_jobs(rec)
    assert ids == ["500", "512", "530"]
    assert dir_of == {"500_0": dirs[0], "500_1": dirs[1], "512": dirs[0], "530": dirs[0]}
