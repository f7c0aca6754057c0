"""Node 0's data-cache build and the nodes waiting for it: a failed or dead node 0 stops the others at once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from hpc_sft import datacache
from hpc_sft.errors import TrainingError

BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hpc_sft import datacache
    datacache.BEAT_S = 0.2
    path, attempt, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    def process(out):
        if mode == "fail":
            raise ValueError("chat template rendering failed at sample 17")
        time.sleep(600)  # a long tokenization: killed by the test
    with datacache.heartbeat(path, attempt):
        datacache.build(path, process)
""")


def builder(tmp_path, path, attempt, mode):
    script = tmp_path / "builder.py"
    script.write_text(BUILDER)
    return subprocess.Popen([sys.executable, str(script), str(path), attempt, mode], stderr=subprocess.PIPE)


def wait_for_status(path, state, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while (datacache.read_status(path) or {}).get("state") != state:
        assert time.monotonic() < deadline, f"node 0 never reported {state!r}"
        time.sleep(0.05)


def test_a_failed_build_stops_the_waiting_nodes_with_its_reason(tmp_path):
    path = tmp_path / "cache" / "k1"
    proc = builder(tmp_path, path, "7.0", "fail")
    with pytest.raises(TrainingError, match=r"node 0 \(.*\) failed to tokenize the data: ValueError: chat "
                                            r"template rendering failed at sample 17"):
        datacache.wait(path, timeout_s=300, attempt="7.0", poll_s=0.05)  # not the 300 s timeout
    assert proc.wait(timeout=60) != 0


def test_a_dead_node_0_is_noticed_by_its_stopped_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_SFT_DATA_STALE_S", "2")
    path = tmp_path / "cache" / "k2"
    proc = builder(tmp_path, path, "8.0", "slow")
    wait_for_status(path, "building")
    time.sleep(1)  # a few beats: a slow but live node 0 is not mistaken for a dead one
    assert (datacache.read_status(path) or {}).get("beat", 0) >= 1
    proc.send_signal(signal.SIGKILL)  # node 0's process dies without a word
    proc.wait()
    with pytest.raises(TrainingError, match=r"stopped tokenizing the data .*no heartbeat"):
        datacache.wait(path, timeout_s=300, attempt="8.0", poll_s=0.05)


def test_an_older_attempts_failure_does_not_stop_this_one(tmp_path):
    path = tmp_path / "cache" / "k3"
    path.parent.mkdir(parents=True)
    datacache.write_status(path, "9.0", "failed", reason="ValueError: the previous run's problem")

    def publish():
        time.sleep(0.5)
        datacache.build(path, lambda out: (os.makedirs(out), open(os.path.join(out, "data.jsonl"), "w").close()))

    thread = threading.Thread(target=publish)
    thread.start()
    assert datacache.wait(path, timeout_s=60, attempt="9.1", poll_s=0.05) == path
    thread.join()


def test_heartbeat_records_failure_before_any_build(tmp_path):
    """Node 0 failing before it starts tokenizing (lock, settings, tidy) reports that too."""
    path = tmp_path / "cache" / "k4"
    path.parent.mkdir(parents=True)
    with pytest.raises(RuntimeError):
        with datacache.heartbeat(path, "10.0"):
            raise RuntimeError("ckpt_output_dir is locked by job 3")
    status = json.loads(datacache.status_file(path).read_text())
    assert status["state"] == "failed" and "locked by job 3" in status["reason"]
