"""Faults without warning on the real cluster (2 nodes, CPU, tiny model): a hung worker and a dead node, from
the fault to detection and to training again, and the work redone; then save time and disk per full state with
and without retention (local, 2 processes).

One command from a clean clone (brings the test cluster up itself): .venv/bin/python bench/faults.py
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, sft_kwargs, step_records, tiny_inputs, ts  # noqa: E402
from _cluster import cluster_up  # noqa: E402
from _report import write_section  # noqa: E402

sys.path.insert(0, str(REPO))
from tests.slurm_helpers import worker_pid  # noqa: E402  (the test's /proc lookup of one node's worker)

SLURM = {"nodes": 2, "time": "00:30:00", "signal_lead_s": 60, "partition": "main", "max_requeues": 5}


def wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def samples(ckpt: Path) -> int:
    records = step_records(ckpt)
    return records[-1]["samples_seen"] if records else 0


def after_fault(ckpt: Path, job, fault_at: float, at_fault: int) -> tuple[float, int]:
    """(seconds from the fault to the rerun's first step, optimizer steps redone) once the job ended."""
    result = job.wait(timeout_s=900)
    assert result.samples_seen == 2400, result
    records = step_records(ckpt)
    later = [r for r in records if ts(r) > fault_at]
    resumed = min(later, key=ts)
    redone = (at_fault - (resumed["samples_seen"] - resumed["batch_size"])) // resumed["batch_size"]
    return ts(resumed) - fault_at, max(0, redone)


def hang_case(model: Path, data: Path, root: Path) -> str:
    import hpc_sft

    ckpt = root / "hang" / "ckpt"
    os.environ["HPC_SFT_FAULT_STEP_DELAY_S"] = "0.1"
    job = hpc_sft.sft(**sft_kwargs(model, data, ckpt, num_epochs=2), executor="slurm",
                      slurm={**SLURM, "hang_timeout_s": 30})
    os.environ.pop("HPC_SFT_FAULT_STEP_DELAY_S")
    wait(lambda: samples(ckpt) >= 1400, 600, "epoch 1")
    pid, at_fault = worker_pid(ckpt, 1), samples(ckpt)
    stopped = time.time()
    os.kill(pid, signal.SIGSTOP)
    wait(lambda: any(ckpt.glob(".hpc_sft_hang.*.json")), 300, "a hang record")  # the next run removes it
    detected = time.time() - stopped
    again, redone = after_fault(ckpt, job, stopped, at_fault)
    return (f"| worker SIGSTOPped (hang_timeout_s=30) | {detected:.1f} s | {again:.1f} s | {redone} "
            "| since the last epoch end (no periodic state) |")


def node_loss_case(model: Path, data: Path, root: Path) -> str:
    import hpc_sft

    ckpt = root / "loss" / "ckpt"
    os.environ.update(HPC_SFT_FAULT_STEP_DELAY_S="0.1", HPC_SFT_NODES_STOP_WAIT_S="15")
    job = hpc_sft.sft(**sft_kwargs(model, data, ckpt, num_epochs=2, full_state_every_min=0.1), executor="slurm",
                      slurm=SLURM)
    os.environ.pop("HPC_SFT_FAULT_STEP_DELAY_S")
    os.environ.pop("HPC_SFT_NODES_STOP_WAIT_S")
    wait(lambda: samples(ckpt) >= 1500, 600, "epoch 1")
    host = "node2"
    at_fault, killed = samples(ckpt), time.time()
    cluster = str(REPO / "slurm" / "cluster.sh")
    subprocess.run([cluster, "kill-node", "2"], check=True, capture_output=True)
    try:
        again, redone = after_fault(ckpt, job, killed, at_fault)
    finally:
        subprocess.run([cluster, "start-node", "2"], capture_output=True, timeout=120)
    from hpc_sft.rundir.status import read_status

    stop = (read_status(ckpt).get("stops") or [{}])[0]
    decided = stop.get("time", killed) - killed
    return (f"| {host} killed (slurmd and processes; SlurmdTimeout=30, stop wait 15 s) | {decided:.1f} s "
            f"| {again:.1f} s | {redone} | since the last periodic state (every 6 s) |")


def disk_case(model: Path, data: Path, root: Path) -> str:
    import hpc_sft

    rows = []
    for keep in (0, 1):
        ckpt = root / f"keep{keep}" / "ckpt"
        hpc_sft.sft(**sft_kwargs(model, data, ckpt, num_epochs=3, keep_full_states=keep), nproc_per_node=2)
        states = sorted((ckpt / "full_state").iterdir())
        size = sum(f.stat().st_size for s in states for f in s.rglob("*") if f.is_file())
        saves = [json.loads((s / "hpc_sft_complete.json").read_text())["save_seconds"] for s in states]
        rows.append(f"| {keep} | {len(states)} | {size / 2**20:.1f} MiB | {max(saves):.2f} s |")
    return "\n".join(rows)


def main() -> None:
    cluster_up()
    model, data = tiny_inputs()
    root = Path(tempfile.mkdtemp(prefix="hpc-sft-bench-faults-", dir="/tmp"))
    rows = [hang_case(model, data, root), node_loss_case(model, data, root)]
    disk = disk_case(model, data, root)
    body = ("## Faults without warning (`bench/faults.py`)\n\n"
            "2 nodes x 1 CPU process, tiny Llama, 2 epochs of 1200 conversations (a 0.1 s pause after every "
            "step so that the fault lands mid-epoch). Detected: the fault to the first hang record (hang) or "
            "to node 0's recorded stop (node loss: it waits 15 s for a silent node). Training again: the fault to the first optimizer step of "
            "the requeued run (Slurm's queue and, for the dead node, its SlurmdTimeout included). Redone: "
            "optimizer steps done before the fault that the rerun did again.\n\n"
            "| fault | detected | training again | steps redone | work lost |\n|---|---|---|---|---|\n"
            + "\n".join(rows) +
            "\n\nFull states on disk at the end of a 3-epoch local run (2 processes, 256 conversations), "
            "with every state kept and with the default retention:\n\n"
            "| keep_full_states | states kept | disk | longest save |\n|---|---|---|---|\n" + disk +
            "\n\nAt 7-8B with Adam one full state is roughly 3 model copies in fp32 (~90 GB); "
            "`keep_full_states=1` bounds a run to one (plus the one being written).")
    write_section("faults", body)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
