"""A site that forbids requeue, on the real cluster (partition noreq: job_submit.lua clears --requeue): the run goes
on as a chain of new jobs, bit-identical to an uninterrupted run; status, logs and cancel follow the chain."""
import subprocess
import time

import pytest
from click.testing import CliRunner

from hpc_sft.cli import main
from hpc_sft.executors.slurm import client as slurm_client
from hpc_sft.rundir.status import read_status
from tests.loading import assert_loads_as_trained, newest_full_state
from tests.slurm_helpers import final_weights, preempt, samples_now, submit, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.training]


def chain(ckpt) -> list[str]:
    return read_status(ckpt).get("chain") or []


def states(job_ids) -> dict:
    """(state, restarts) of each job, from slurmctld (it keeps ended jobs for MinJobAge=300 s here)."""
    return {job_id: (now["state"], now["restarts"]) for job_id in job_ids
            for now in [slurm_client.slurm_state(job_id)]}


def queued() -> set[str]:
    return set(slurm_client.run(["squeue", "-h", "-o", "%i"]).split())


def test_preempted_and_time_limited_without_requeue_finishes_bit_identical(
        slurm_cluster, tiny_model, data_1200, reference_1200, tmp_path, monkeypatch):
    # The first job is preempted at 300 samples (the site cancels it). Slurm's time-limit warning comes 40-70 s
    # into a 2-minute job; the 131 steps left then wait 0.55 s each (72 s), so the second job cannot finish
    # either: it ends at the warning and a third job finishes the run.
    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as mp:
        mp.setenv("HPC_SFT_FAULT_STEP_DELAY_S", "0.55")
        job = submit(tiny_model, data_1200, ckpt, 2, {"partition": "noreq", "time": "00:02:00", "signal_lead_s": 50})
    assert job.requeue_allowed is False
    wait_until(lambda: samples_now(ckpt) >= 300, 300, "300 samples")
    preempt()
    wait_until(lambda: len(chain(ckpt)) >= 2, 120, "the next job of the chain")
    result = job.wait(timeout_s=900)
    ids = chain(ckpt)
    assert ids[0] == job.job_id and len(ids) >= 3 and job.current_id == ids[-1]
    assert result.samples_seen == 2400 and final_weights(result) == final_weights(reference_1200)
    assert_loads_as_trained(result.checkpoint_path, newest_full_state(ckpt), tiny_model)
    assert result.restarts == len(ids) - 1
    # never requeued; each later job saved and left on its own before its limit. The preempted one left on its
    # own within the grace time too: Slurm 22.05 records that as COMPLETED, 24.11 as PREEMPTED.
    now = states(ids)
    assert now[ids[0]] in {("COMPLETED", 0), ("PREEMPTED", 0)} and {now[i] for i in ids[1:]} == {("COMPLETED", 0)}, now
    stops = read_status(ckpt)["stops"]
    assert stops[0]["samples_seen"] < 600  # the first stop was the preemption, long before the time limit
    assert [s["action"] for s in stops] == ["resubmit"] * (len(ids) - 1) + ["finish"]
    assert [s["job_id"] for s in stops] == ids
    status = CliRunner().invoke(main, ["status", job.job_id])
    assert status.exit_code == 0 and f"chain of {len(ids)} jobs, now job {ids[-1]}" in status.output, status.output


def test_cancel_stops_the_whole_chain(slurm_cluster, tiny_model, data_1200, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as mp:
        mp.setenv("HPC_SFT_FAULT_STEP_DELAY_S", "0.2")
        job = submit(tiny_model, data_1200, ckpt, 1, {"partition": "noreq"})
    wait_until(lambda: samples_now(ckpt) >= 100, 300, "100 samples")
    subprocess.run(["scancel", "-s", "USR2", job.job_id], check=True)  # a warning, as before a time limit
    wait_until(lambda: len(chain(ckpt)) == 2, 120, "the next job of the chain")
    second = chain(ckpt)[1]
    wait_until(lambda: samples_now(ckpt) >= 200, 300, "the second job training")
    res = CliRunner().invoke(main, ["cancel", job.job_id])
    assert res.exit_code == 0 and job.job_id in res.output and second in res.output, res.output
    wait_until(lambda: not {job.job_id, second} & queued(), 60, "the chain to leave the queue")
    time.sleep(5)  # long enough for a successor queued on the way out to show up
    assert chain(ckpt) == [job.job_id, second] and not queued() & {*chain(ckpt)}
    assert states([second])[second][0] == "CANCELLED"
