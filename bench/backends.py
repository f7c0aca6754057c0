"""Whole-run wall time of the two backends on the same tiny job: local (1 and 2 processes) and on Slurm (2 nodes).

Slurm rows use the test cluster (brought up by the script itself).
Run: .venv/bin/python bench/backends.py [--runs 3] [--no-slurm]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import sft_kwargs, step_records, tiny_inputs, ts  # noqa: E402
from _cluster import cluster_up  # noqa: E402
from _report import write_section  # noqa: E402

BACKENDS = ("instructlab-training", "trl")
EPOCHS = 2


def one_run(backend: str, model: Path, data: Path, ckpt: Path, where: str) -> dict:
    """Wall seconds of one sft() call to its returned result, in a fresh Python process (imports counted,
    as a user's script pays them), and the training throughput."""
    kw = sft_kwargs(model, data, ckpt, backend, num_epochs=EPOCHS)
    if where == "slurm":
        kw.update(executor="slurm", slurm={"nodes": 2, "time": "00:30:00", "partition": "main"})
        call = "hpc_sft.sft(**kw).wait(timeout_s=1800)"
    else:
        kw["nproc_per_node"] = 2 if where == "local-2" else 1
        call = "hpc_sft.sft(**kw)"
    script = f"import json, sys, hpc_sft; kw = json.loads(sys.argv[1]); {call}"
    # the test cluster's 4 nodes share this machine's cores: 1 thread per node process (sbatch exports it),
    # as torchrun itself sets for several processes on one node; unset, Slurm rows run 2-3x slower
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if where == "slurm" else None
    start = time.time()
    subprocess.run([sys.executable, "-c", script, json.dumps(kw)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env)
    wall = time.time() - start
    steps = step_records(ckpt)
    first, last = steps[0], steps[-1]
    rate = (last["samples_seen"] - first["samples_seen"]) / max(1e-9, ts(last) - ts(first))
    return {"wall": wall, "to_first_step": ts(first) - start, "rate": rate, "samples": last["samples_seen"]}


def row(backend: str, where: str, runs: list[dict]) -> str:
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "to_first_step", "rate")}
    walls = [r["wall"] for r in runs]
    return (f"| {backend} | {where} | {med['wall']:.1f} s | {min(walls):.1f}–{max(walls):.1f} s | "
            f"{med['to_first_step']:.1f} s | {med['rate']:.0f} | {runs[0]['samples']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-slurm", action="store_true")
    opts = parser.parse_args()
    if not opts.no_slurm:
        cluster_up()
    places = ["local-1", "local-2"] + ([] if opts.no_slurm else ["slurm"])
    model, data = tiny_inputs()
    root = Path(tempfile.mkdtemp(prefix="hpc-sft-bench-backends-", dir="/tmp"))
    rows = []
    for where in places:
        for backend in BACKENDS:
            runs = [one_run(backend, model, data, root / f"{backend}-{where}-{i}" / "ckpt", where)
                    for i in range(opts.runs)]
            rows.append(row(backend, where, runs))
            print(rows[-1], flush=True)
    body = ("## Backends: whole-run wall time on the same job (`bench/backends.py`)\n\n"
            f"Tiny Llama (125k parameters), 1200 conversations, {EPOCHS} epochs, effective batch 16, CPU, "
            f"{opts.runs} runs each. *Wall* is a fresh `python -c 'hpc_sft.sft(...)'` process, imports included, "
            "to its returned result (Slurm: submit, then `job.wait()`, 2 nodes x 1 process with "
            "OMP_NUM_THREADS=1 because the test cluster's nodes share 2 cores, queue wait included); "
            "*to first step* is from that process's start to the first logged step; *samples/s* is training "
            "throughput between the first and last logged step.\n\n"
            "| backend | where | wall (median) | range | to first step | samples/s | samples |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    write_section("backends", body)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
