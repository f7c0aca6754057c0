"""Allocation start -> first training step with hpc-sft on the real cluster, vs a bare run_training.

One command from a clean clone (brings the test cluster up itself): .venv/bin/python bench/startup.py
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import job_start, sft_kwargs, step_records, tiny_inputs, ts  # noqa: E402
from _cluster import cluster_up  # noqa: E402
from _report import write_section  # noqa: E402


def bare_run(model: Path, data: Path, ckpt: Path, data_dir: Path, process_data: bool) -> float:
    """Seconds from calling run_training to its first logged step (same settings, CPU shim on)."""
    from hpc_sft.backends.instructlab import backend as ilt
    from hpc_sft.config.validate import build_config, split_values
    from hpc_sft.launch import Launch
    from instructlab.training import TorchrunArgs, TrainingArgs, run_training

    config = build_config(*split_values(sft_kwargs(model, data, ckpt, data_output_dir=str(data_dir))))
    launch = Launch(nproc_per_node=1, device="cpu", process_data=process_data)
    torch_kw, train_kw = ilt.map_args(config, launch)
    start = time.time()
    os.environ.update(ilt.training_env(launch))  # this process does nothing else
    run_training(TorchrunArgs(**torch_kw), TrainingArgs(**train_kw))
    return ts(step_records(ckpt)[0]) - start


def slurm_run(model: Path, data: Path, ckpt: Path, data_dir: Path) -> float:
    """Seconds from the allocation's start to the first logged step, 1 node, through hpc-sft."""
    import hpc_sft

    job = hpc_sft.sft(**sft_kwargs(model, data, ckpt, data_output_dir=str(data_dir)), executor="slurm",
                      slurm={"nodes": 1, "time": "00:30:00", "partition": "main"})
    job.wait(timeout_s=900)
    return ts(step_records(ckpt)[0]) - job_start(job.job_id)


def main() -> None:
    cluster_up()
    model, data = tiny_inputs()
    root = Path(tempfile.mkdtemp(prefix="hpc-sft-bench-startup-", dir="/tmp"))
    results: dict[str, list[float]] = {}
    for i in range(3):
        results.setdefault("bare run_training, tokenizes the data", []).append(
            bare_run(model, data, root / f"bare-cold-{i}" / "ckpt", root / f"bare-data-{i}", True))
        results.setdefault("bare run_training, data already tokenized", []).append(
            bare_run(model, data, root / f"bare-warm-{i}" / "ckpt", root / f"bare-data-{i}", False))
        results.setdefault("hpc-sft on Slurm, first job (node 0 tokenizes)", []).append(
            slurm_run(model, data, root / f"slurm-cold-{i}" / "ckpt", root / f"data-{i}"))
        results.setdefault("hpc-sft on Slurm, data cache hit", []).append(
            slurm_run(model, data, root / f"slurm-warm-{i}" / "ckpt", root / f"data-{i}"))
    rows = [f"| {name} | {statistics.median(v):.1f} s | {min(v):.1f}–{max(v):.1f} s |" for name, v in results.items()]
    body = ("## Start-up: to the first training step (`bench/startup.py`)\n\n"
            "Tiny Llama (125k parameters), 1200 conversations, CPU, 1 node x 1 process, 3 runs each. Slurm rows "
            "count from the allocation's StartTime (scontrol, 1 s resolution) to the first step's metrics "
            "timestamp; bare rows from the run_training call.\n\n| run | median | range |\n|---|---|---|\n"
            + "\n".join(rows))
    write_section("startup", body)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
