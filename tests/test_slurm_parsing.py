"""Parsing real Slurm client output, offline: the files under tests/fixtures/slurm-VERSION/ were recorded from the
test cluster by tests/fixtures/record_slurm.sh (a 2-node job excluding node[3-4], running, requeued, cancelled).
Every test runs once per recorded Slurm version (slurm-22.05: bookworm's packages, slurm-24.11: trixie's)."""
from __future__ import annotations

from pathlib import Path

import pytest

from hpc_sft.executors.slurm import check, client

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("slurm-*"))


@pytest.fixture(params=FIXTURES, ids=[p.name for p in FIXTURES])
def recorded(request):
    return lambda name: (request.param / name).read_text()


def test_job_states_from_scontrol(recorded):
    running = client.state_from_scontrol(recorded("scontrol-show-job-running.txt"))
    requeued = client.state_from_scontrol(recorded("scontrol-show-job-requeued.txt"))
    cancelled = client.state_from_scontrol(recorded("scontrol-show-job-cancelled.txt"))
    assert (running["state"], running["restarts"]) == ("RUNNING", 0)
    assert running["elapsed"].count(":") == 2
    assert (requeued["state"], requeued["restarts"]) == ("PENDING", 1)
    assert (cancelled["state"], cancelled["restarts"]) == ("CANCELLED", 1)


def test_job_state_from_sacct_drops_who_cancelled(recorded):
    assert client.state_from_sacct(recorded("sacct-state-elapsed.txt"))["state"] == "CANCELLED"
    assert client.state_from_sacct("")["state"] == "UNKNOWN"


def test_excluded_nodes_are_expanded(recorded):
    assert client.excluded_nodes(recorded("scontrol-show-job-running.txt")) == ["node3", "node4"]
    assert client.excluded_nodes("JobId=1 ExcNodeList=(null)") == []


def test_partitions_default_grace_and_preemption(recorded):
    parts = check.parse_partitions(recorded("scontrol-show-partition.txt"))
    assert set(parts) - {"noreq"} == {"", "main", "high"}  # noreq: recorded since it exists (24.11 on)
    assert parts[""]["PartitionName"] == "main"
    assert check.seconds(parts["main"]["GraceTime"]) == 30
    assert parts["main"]["PreemptMode"] == "REQUEUE" and parts["high"]["PreemptMode"] == "OFF"
    assert parts["main"]["TotalNodes"] == "4" and parts["main"]["MaxTime"] == "UNLIMITED"


def test_both_slurm_versions_are_recorded():
    assert {"slurm-22.05", "slurm-24.11"} <= {p.name for p in FIXTURES}


def test_a_partition_without_usable_nodes_warns(recorded):
    idle = check.node_states(recorded("sinfo-nodes.txt"), "main")
    drained = check.node_states(recorded("sinfo-nodes-drained.txt"), "")
    assert idle == {f"node{i}": "idle" for i in range(1, 5)}
    assert check.idle_warning(idle, "main", 4) == []
    [warning] = check.idle_warning(drained, "", 2)
    assert "0 node(s) that can run jobs now (4 drained)" in warning and "Fix: " in warning
