"""Faults without warning on the real cluster: a node that dies mid-run, and saves slower than
slurm.hang_timeout_s in a healthy run (which must never look like a hang)."""
import json
import re
import subprocess

import pytest

from hpc_sft.executors.slurm.watchdog import MARK
from hpc_sft.progress import dir_status, render_status
from hpc_sft.rundir.status import read_status
from tests.helpers import REPO
from tests.slurm_helpers import final_weights, plan_hosts, samples_now, submit, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.training]
CLUSTER = str(REPO / "slurm" / "cluster.sh")


def periodic_state(ckpt):
    """The metadata of a published mid-epoch-1 full state (None: none yet, or one is being replaced)."""
    state = ckpt / "full_state" / "epoch_1" / "hpc_sft_complete.json"
    try:
        meta = json.loads(state.read_text())["metadata"]
    except (OSError, ValueError, KeyError):
        return None
    return meta if meta.get("global_step") else None


def test_a_lost_node_is_left_behind_and_the_run_ends_exact_from_the_last_periodic_state(
        slurm_cluster, tiny_model, data_1200, reference_1200, tmp_path, monkeypatch):
    """Node 1's host dies (its slurmd and every process on it, SIGKILL) mid-epoch 1, right after a periodic
    full state: node 0 notices the silent node, requeues without it, and the run ends on other nodes with the
    weights of an uninterrupted run, having redone only the steps since that state."""
    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as mp:
        mp.setenv("HPC_SFT_FAULT_STEP_DELAY_S", "0.1")
        mp.setenv("HPC_SFT_NODES_STOP_WAIT_S", "15")  # how long node 0 waits for word from a silent node
        job = submit(tiny_model, data_1200, ckpt, 2, full_state_every_min=0.1)  # a full state every 6 s
    wait_until(lambda: periodic_state(ckpt), 300, "a periodic state in epoch 1")
    saved = periodic_state(ckpt)["samples_seen"]
    lost = plan_hosts(job)[0][1]  # the host of node rank 1 ("node2")
    try:
        subprocess.run([CLUSTER, "kill-node", lost[len("node"):]], check=True, capture_output=True)
        at_kill = samples_now(ckpt)
        result = job.wait(timeout_s=600)
    finally:
        subprocess.run([CLUSTER, "start-node", lost[len("node"):]], capture_output=True, timeout=120)
    assert result.samples_seen == 2400 and result.restarts >= 1
    assert final_weights(result) == final_weights(reference_1200)
    stop = read_status(ckpt)["stops"][0]
    assert stop["action"] == "requeue" and stop["reason"].startswith(f"node lost: node 1 ({lost})"), stop
    assert 1200 < stop["samples_seen"] and saved <= stop["samples_seen"] <= at_kill, (saved, stop, at_kill)
    runs = plan_hosts(job)
    assert lost not in runs[1], runs
    print(f"node loss: periodic state at {saved}, killed at {at_kill}, resumed from {stop['samples_seen']} "
          f"samples ({at_kill - stop['samples_seen']} redone)")


def test_slow_saves_within_the_allowance_never_fire_the_watchdog(slurm_cluster, tiny_model, tiny_data, tmp_path,
                                                                  monkeypatch):
    """Every full-state save takes 20 s, twice slurm.hang_timeout_s (10 s): the watchdog allows a first save
    4 x the timeout and later ones 3 x the longest save seen, so a healthy run finishes untouched."""
    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as mp:
        mp.setenv("HPC_SFT_FAULT_PAUSE_BEFORE_PUBLISH_S", "20")
        job = submit(tiny_model, tiny_data, ckpt, 2, {"hang_timeout_s": 10})  # 2 epochs: two slow saves
    result = job.wait(timeout_s=600)
    assert result.samples_seen == 512 and result.restarts == 0
    logs = "".join(path.read_text() for node in range(2) for path in job.log_paths(node))
    logs += "".join(path.read_text() for path in ckpt.glob("full_logs_global*.log"))  # the workers' output
    assert MARK not in logs and not list(ckpt.glob(".hpc_sft_hang.*"))
    assert logs.count("pausing before publishing a full state") >= 2  # both slow saves happened
    shown = render_status(dir_status(ckpt))  # what `hpc-sft status` prints
    took = re.search(r"a checkpoint save takes (\d+\.\d) s", shown)
    assert took and float(took.group(1)) >= 20, shown
    marker = json.loads((ckpt / "full_state" / "epoch_1" / "hpc_sft_complete.json").read_text())
    assert marker["save_seconds"] >= 20 and sorted(p.name for p in (ckpt / "full_state").iterdir()) == ["epoch_1"]
