"""A 2x2 sweep on the real cluster: one job array throttled to 2, one task preempted and resumed bit-identically
to the same task run alone, the status table a user reads."""
import json
import subprocess
import time

import pytest

import hpc_sft
from hpc_sft.executors.slurm import client as slurm_client
from hpc_sft.rundir.status import read_status
from hpc_sft.tiny import write_tiny_dataset
from tests.helpers import cli
from tests.loading import assert_loads_as_trained, newest_full_state
from tests.slurm_helpers import final_weights, kwargs_for, samples_now, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.training]
GRID = {"learning_rate": [1e-4, 1e-3], "effective_batch_size": [8, 16]}


def running_tasks(array_id: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-t", "R", "-j", array_id, "-o", "%i"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


def preempt_node(job_id: str) -> None:
    """A high-partition job that wants the one node this task runs on: Slurm preempts (requeues) just it."""
    node = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True,
                          check=True).stdout.strip()
    subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "-p", "high", "-w", node, "-N", "1", "--exclusive",
                    "-t", "5", "--wrap", "sleep 1"], capture_output=True, text=True, check=True)


def wait_all(handle, timeout_s: float) -> int:
    """Wait for every task; the most tasks seen running at once."""
    most, deadline = 0, time.monotonic() + timeout_s
    while not all(task.done() for task in handle):
        most = max(most, len(running_tasks(handle.job_id)))
        assert time.monotonic() < deadline, "the sweep did not finish"
        time.sleep(1)
    return most


def test_sweep_array_throttled_one_task_preempted_resumes_exactly(slurm_cluster, tiny_model, tmp_path, monkeypatch):
    data = write_tiny_dataset(tmp_path / "train-400.jsonl", n=400)
    root = tmp_path / "sweep"
    with monkeypatch.context() as mp:
        mp.setenv("HPC_SFT_FAULT_STEP_DELAY_S", "0.1")  # 50 steps of task 0 take >= 5 s: time to preempt it
        handle = hpc_sft.sft(**kwargs_for(tiny_model, data, root, num_epochs=1), executor="slurm",
                             sweep={"max_parallel": 2, "grid": GRID},
                             slurm={"nodes": 1, "time": "00:30:00", "signal_lead_s": 60, "partition": "main",
                                    "exclusive": True})
    assert len(handle) == 4 and len(handle.array_ids) == 1
    assert [t.job_id for t in handle] == [f"{handle.job_id}_{i}" for i in range(4)]
    first = handle[0]
    wait_until(lambda: samples_now(first.ckpt_output_dir) >= 120, 300, "task 0 at 120 samples")
    preempt_node(first.job_id)
    wait_until(lambda: (slurm_client.slurm_state(first.job_id)["restarts"] or 0) >= 1, 120, "task 0 requeued")
    most = wait_all(handle, 600)
    results = handle.wait(timeout_s=60)
    assert most <= 2, f"{most} tasks ran at once with max_parallel = 2"

    assert [r.samples_seen for r in results] == [400] * 4
    assert results[0].restarts >= 1 and [r.restarts for r in results[1:]] == [0, 0, 0]
    stops = read_status(first.ckpt_output_dir)["stops"]
    assert [s["action"] for s in stops] == ["requeue", "finish"] and 0 < stops[0]["samples_seen"] < 400
    alone = hpc_sft.sft(**kwargs_for(tiny_model, data, tmp_path / "alone", num_epochs=1, learning_rate=1e-4,
                                     effective_batch_size=8), nproc_per_node=1)
    assert final_weights(results[0]) == final_weights(alone)
    assert_loads_as_trained(results[0].checkpoint_path, newest_full_state(first.ckpt_output_dir), tiny_model)
    assert final_weights(results[1]) != final_weights(results[0])  # the tasks really differ

    shown = cli("status", handle.job_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"sweep {handle.job_id}: 4 tasks (4 completed)")
    cells = [line.split()[line.startswith("*"):] for line in lines[2:6]]  # task job lr ebs state restarts ...
    assert [c[1] for c in cells] == [t.job_id for t in handle]
    assert [c[4:7] for c in cells] == [["COMPLETED", str(r.restarts), "400/400"] for r in results]
    assert [c[2:4] for c in cells] == [["0.0001", "8"], ["0.0001", "16"], ["0.001", "8"], ["0.001", "16"]]
    best = min(range(4), key=lambda i: float(cells[i][8]))
    assert lines[2 + best].startswith("*") and f"* leads (lowest loss so far): {handle[best].ckpt_output_dir.name}" \
        in shown.stdout

    info = json.loads(cli("status", handle.job_id, "--json").stdout)
    usage = info["accounting"]["usage"]
    assert [u["unit"] for u in usage] == ["CPU"]
    assert usage[0]["attempts"] == 4 + results[0].restarts and usage[0]["interrupted"] == results[0].restarts
    rows = [line.split("|") for line in subprocess.run(
        ["sacct", "-j", handle.job_id, "-X", "--duplicates", "-n", "-P", "-o", "ElapsedRaw,AllocCPUS,Start"],
        capture_output=True, text=True, check=True).stdout.split() if "|Unknown" not in line]
    assert usage[0]["total_h"] == pytest.approx(sum(int(e) * int(c) for e, c, _ in rows) / 3600, abs=1e-9)
    assert 0 < usage[0]["restarts_h"] < usage[0]["total_h"]
    assert "CPU-hours: " in shown.stdout and "lost to interruptions (redone" in shown.stdout
