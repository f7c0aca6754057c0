"""Accounting figures from sacct, offline: real `sacct --duplicates` output recorded from the Slurm 22.05 test cluster
(tests/fixtures/record_sacct.sh: requeued 2-node job, requeued array tasks, an array recorded while running) and a
real requeued sweep (tests/fixtures/slurm-22.05/sweep-run/: its sacct output with each task's status record and
metrics file, see the README there)."""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import pytest

from hpc_sft.executors.slurm import accounting as acct
from hpc_sft.progress import render_status

RECORDED = Path(__file__).parent / "fixtures" / "slurm-22.05"
SWEEP = RECORDED / "sweep-run"


def recorded(name: str) -> list[acct.Attempt]:
    return acct.parse_sacct((RECORDED / name).read_text())


def sweep_tasks() -> dict[str, list[acct.Attempt]]:
    return acct.by_task(acct.parse_sacct((SWEEP / "sacct-duplicates.txt").read_text()))


def task_dir(task: str) -> Path:
    return SWEEP / f"task{task.split('_')[1]}"


def seconds(hours: float, per: int = 2) -> float:
    """Wall seconds of unit-hours on an allocation of `per` units (the sweep's tasks have 2 CPUs)."""
    return hours * 3600 / per


def test_the_query_asks_for_every_requeued_attempt():
    # Without --duplicates sacct 22.05 shows only the newest run of a requeued job: its first 7 s vanish.
    cmd = acct.sacct_command("26067001")
    assert {"--duplicates", "-X", "--parsable2", "--noheader"} <= set(cmd)
    assert cmd[cmd.index("-o") + 1].split(",") == list(acct.FIELDS)
    newest_only = recorded("sacct-no-duplicates-requeued-2node.txt")
    every = recorded("sacct-duplicates-requeued-2node.txt")
    assert [a.elapsed_s for a in newest_only] == [25]
    assert [a.elapsed_s for a in every] == [7, 25]


def test_a_requeued_two_node_job_is_two_attempts():
    first, rerun = recorded("sacct-duplicates-requeued-2node.txt")
    assert first == acct.Attempt("26067001", "26067001", "REQUEUED", datetime(2026, 12, 2, 21, 37, 57),
                                 datetime(2026, 12, 2, 21, 38, 4), 7, gpus=0, cpus=2, nodes=2, partition="main")
    assert (rerun.state, rerun.elapsed_s, rerun.cpus, rerun.nodes) == ("COMPLETED", 25, 2, 2)
    # the requeue wait (BeginTime, cred_expire) is between the attempts and allocated to nobody
    assert (rerun.start - first.end).total_seconds() == 6
    used = acct.usage([first, rerun], [], [])
    assert (used.unit, used.attempts, used.interrupted) == ("CPU", 2, 1)
    assert used.total_h == pytest.approx(2 * (7 + 25) / 3600)


def test_array_tasks_are_runs_of_their_own():
    tasks = acct.by_task(recorded("sacct-duplicates-array-requeued-task.txt"))
    assert {t: [a.state for a in runs] for t, runs in tasks.items()} == {
        "26067002_0": ["COMPLETED"], "26067002_1": ["REQUEUED", "COMPLETED"]}
    # the highest task carries the array's own id as SLURM_JOB_ID; the others get new ids
    assert [a.raw_id for a in tasks["26067002_1"]] == ["26067002", "26067002"]
    assert tasks["26067002_0"][0].raw_id == "26067003"
    sweep = acct.combined(acct.usage(runs, [], []) for runs in tasks.values())
    assert len(sweep) == 1 and sweep[0].total_h == pytest.approx((20 + 7 + 20) / 3600)
    assert (sweep[0].attempts, sweep[0].interrupted) == (3, 1)


def test_an_array_read_while_it_runs():
    # pending lines (the requeued task waiting, the not-yet-split 26067011_[1-2%1]) were allocated nothing
    attempts = recorded("sacct-duplicates-array-running.txt")
    assert [(a.job_id, a.state) for a in attempts] == [("26067011_0", "REQUEUED"), ("26067011_1", "RUNNING")]
    running = attempts[1]
    assert running.end is None and (running.until - running.start).total_seconds() == 9
    # the requeued task waiting for its rerun counts as interrupted although no later attempt exists yet
    assert acct.usage([attempts[0]], [], []).interrupted == 1
    done = acct.by_task(recorded("sacct-duplicates-array-sequential.txt"))
    assert [a.elapsed_s for a in done["26067011_0"]] == [5, 12]


def test_gpus_come_from_gres_gpu_total():
    # Not recorded here (the test cluster has no GPUs): AllocTRES as sacct prints it on GPU clusters, where the
    # untyped gres/gpu is the whole allocation's count and a typed entry may stand beside it.
    assert acct.gpus_of(acct.parse_tres("billing=128,cpu=128,gres/gpu=16,mem=2000G,node=2")) == 16
    assert acct.gpus_of(acct.parse_tres("cpu=64,gres/gpu:h100=8,gres/gpu=8,mem=500G,node=1")) == 8
    assert acct.gpus_of(acct.parse_tres("cpu=64,gres/gpu:a100=4,gres/gpu:h100=4,node=2")) == 8
    assert acct.gpus_of(acct.parse_tres("billing=2,cpu=2,node=2")) == 0
    line = ("77|77|COMPLETED|2026-12-02T10:00:00|2026-12-02T11:00:00|3600|"
            "billing=128,cpu=128,gres/gpu=16,node=2|128|2|gpu")
    (attempt,) = acct.parse_sacct(line)
    used = acct.usage([attempt], [], [])
    assert (attempt.gpus, attempt.cpus, used.unit, used.total_h) == (16, 128, "GPU", 16.0)
    assert acct.usage_lines(used)[0].startswith("GPU-hours: 16.00 used")


def test_a_requeued_sweep_task_lost_its_save_and_restart():
    """Task 0 of the real sweep: attempt 1 (21:42:15-:50, 35 s) trained steps 1-16 up to 128 samples
    (:39.17-:47.66), saved at the signal (stop: 128 samples) and was requeued; attempt 2 (21:43:37-44:09, 32 s)
    resumed at 136 samples (first step :51.51, last 44:00.64)."""
    runs = sweep_tasks()["26067015_0"]
    records, stops = acct.run_inputs(task_dir("26067015_0"))
    assert [s["samples_seen"] for s in stops] == [128, 400]  # the stop's samples_seen is the saved state
    used = acct.usage(runs, records, stops)
    assert (used.unit, used.attempts, used.interrupted, used.partition) == ("CPU", 2, 1, "main")
    assert used.total_h == pytest.approx(2 * (35 + 32) / 3600)
    assert used.redone_h == 0  # the save at the signal kept every step
    # saves and restarts: attempt 1 after its last step (2.3 s) + attempt 2 before its first (14.5 s less a step)
    assert seconds(used.restarts_h) == pytest.approx(2.34 + 14.5 - 0.3, abs=0.6)
    # start-up of attempt 1 (24 s less a step: data cache, model load) + end of attempt 2 (8.4 s)
    assert seconds(used.overhead_h) == pytest.approx(23.8 + 8.4, abs=0.6)
    assert seconds(used.training_h) == pytest.approx((47.66 - 39.17) + (60.64 - 51.51) + 0.6, abs=0.6)


def test_an_uninterrupted_task_loses_nothing_to_interruptions():
    runs = sweep_tasks()["26067015_1"]
    used = acct.usage(runs, *acct.run_inputs(task_dir("26067015_1")))
    assert (used.lost_h, used.interrupted) == (0, 0)
    assert seconds(used.overhead_h) > 20  # its start-up and end are reported apart, as overhead
    assert "0.0000 lost to interruptions" in acct.usage_lines(used)[0]


def test_a_sweep_is_the_sum_of_its_tasks():
    per_task = [acct.usage(runs, *acct.run_inputs(task_dir(task))) for task, runs in sweep_tasks().items()]
    (sweep,) = acct.combined(per_task)
    assert sweep.total_h == pytest.approx(2 * (35 + 53 + 56 + 29 + 32) / 3600)
    assert sweep.lost_h == pytest.approx(per_task[0].lost_h)
    assert (sweep.attempts, sweep.interrupted) == (5, 1)


def test_a_running_attempt_is_training_since_its_last_step():
    """Task 1 of the real sweep as `hpc-sft status` saw it 2 s after its step 20 (21:42:53.87): RUNNING, no End."""
    (finished,) = sweep_tasks()["26067015_1"]
    now = dataclasses.replace(finished, state="RUNNING", end=None, elapsed_s=41)
    records, stops = acct.run_inputs(task_dir("26067015_1"))
    used = acct.usage([now], [r for r in records if r["timestamp"] < "2026-12-02T21:42:54"], stops)
    done = acct.usage([finished], records, stops)
    assert used.lost_h == 0 and used.total_h == pytest.approx(2 * 41 / 3600)
    assert used.overhead_h < done.overhead_h  # only its start-up so far: no end yet
    assert seconds(used.training_h) == pytest.approx(53.87 - 40.24 + 2 + 0.4, abs=0.5)


def relabel_after(records: list[dict], when: str, shift: int) -> list[dict]:
    return [{**r, "samples_seen": r["samples_seen"] - shift} if r["timestamp"] > when else r for r in records]


@pytest.mark.parametrize("with_stop", [True, False], ids=["from-the-stop", "inferred-without-a-stop"])
def test_steps_after_the_saved_state_are_redone(with_stop):
    """Task 0's real run, made into one whose save at the signal did not happen: the state it resumed from is
    the one at 96 samples, so attempt 2 trained 104..128 again (its records relabelled 32 samples back)."""
    runs = sweep_tasks()["26067015_0"]
    records, stops = acct.run_inputs(task_dir("26067015_0"))
    records = relabel_after(records, "2026-12-02T21:43", 32)
    stops = [dict(stops[0], samples_seen=96), stops[1]] if with_stop else []
    used = acct.usage(runs, records, stops)
    step = {r["samples_seen"]: datetime.fromisoformat(r["timestamp"]) for r in records
            if r["timestamp"] < "2026-12-02T21:43"}
    redone_s = (step[128] - step[96]).total_seconds()  # the steps to 104, 112, 120, 128 in attempt 1
    assert seconds(used.redone_h) == pytest.approx(redone_s)
    kept = acct.usage(runs, *acct.run_inputs(task_dir("26067015_0")))
    assert used.restarts_h == pytest.approx(kept.restarts_h)
    assert used.total_h == kept.total_h and used.lost_h == pytest.approx(kept.lost_h + used.redone_h)


def test_status_lines():
    used = acct.Usage("CPU", 0.42, 0.01, 0.04, 0.02, attempts=3, interrupted=2, partition="main")
    assert acct.usage_lines(used) == [
        "CPU-hours: 0.42 used, 0.05 lost to interruptions (redone 0.01, saves and restarts 0.04)",
        "  3 allocations on main, 2 requeued; start-up and end of the run (an uninterrupted run pays it too): 0.02"]
    tiny = acct.Usage("CPU", 0.0372, 0, 0.0092, 0.0179, attempts=2, interrupted=1)
    assert acct.usage_lines(tiny)[0] == ("CPU-hours: 0.0372 used, 0.0092 lost to interruptions (redone 0.0000, "
                                         "saves and restarts 0.0092)")
    assert json.loads(json.dumps(used.as_dict()))["lost_h"] == pytest.approx(0.05)


def test_status_says_why_accounting_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a login node without the Slurm client: the real lookup fails
    block = acct.status_block("26067015_0", lambda _task: task_dir("26067015_0"))
    assert block == {"unavailable": "sacct not found", "lines": ["accounting: unavailable (sacct not found)"]}
    info = {"headline": "job 1: RUNNING", "samples_seen": 8, "samples_total": 16, "last_checkpoint": None,
            "stops": [], "logs": "/x", "accounting": block}
    assert "accounting: unavailable (sacct not found)" in render_status(info).splitlines()


def test_usage_is_a_value():
    with pytest.raises(dataclasses.FrozenInstanceError):
        acct.Usage("CPU", 1, 0, 0, 0, 1, 0).total_h = 2
