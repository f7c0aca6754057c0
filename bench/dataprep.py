"""Tokenizing 100,000 conversations with the default process count: instructlab-training called directly vs
hpc-sft's data-once cache (cold, then the hit a requeued job sees). No cluster needed.

One command from a clean clone:  .venv/bin/python bench/dataprep.py [--conversations 100000]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, sft_kwargs, tiny_inputs  # noqa: E402
from _report import write_section  # noqa: E402


def direct(config, out: Path) -> float:
    """instructlab-training's process_data as run_training would call it (default procs: min(16, CPUs))."""
    from instructlab.training import data_process as dp  # imported before, in main(): not timed

    start = time.perf_counter()
    dp.process_data(data_path=config.data_path, data_output_path=str(out), max_seq_len=config.max_seq_len,
                    model_path=config.model_path, num_cpu_procs=min(16, len(os.sched_getaffinity(0))))
    return time.perf_counter() - start


def through_cache(config, backend) -> float:
    """What node 0 of a Slurm job does: content key, then build (or hit) the cache."""
    from hpc_sft.executors.slurm.node_task import prepare_data

    start = time.perf_counter()
    prepare_data(config, backend, node_rank=0)
    return time.perf_counter() - start


def main() -> None:
    from hpc_sft.backends.instructlab.backend import InstructLabTrainingSFTBackend
    from hpc_sft.config.validate import build_config, split_values
    from hpc_sft.tiny import write_tiny_dataset
    import instructlab.training.data_process as warm  # both timed paths find it imported
    assert warm.process_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    n = parser.parse_args().conversations
    model, _ = tiny_inputs()
    data = CACHE / f"train-{n}.jsonl"
    if not data.is_file():
        write_tiny_dataset(data, n=n)
    root = Path(tempfile.mkdtemp(prefix="hpc-sft-bench-data-", dir="/tmp"))
    config = build_config(*split_values(sft_kwargs(model, data, root / "ckpt", data_output_dir=str(root / "cache"))))
    backend = InstructLabTrainingSFTBackend()
    cold_datasets_cache()
    cold_s = through_cache(config, backend)
    cold_datasets_cache()
    backend_s = direct(config, root / "direct")
    hits = [through_cache(config, backend) for _ in range(5)]
    size = data.stat().st_size / (1 << 20)
    body = ("## Data processing at size (`bench/dataprep.py`)\n\n"
            f"{n:,} generated conversations ({size:.0f} MiB of JSONL), tiny tokenizer, max_seq_len "
            f"{config.max_seq_len}, instructlab-training's default process count "
            f"(min(16, CPUs) = {min(16, len(os.sched_getaffinity(0)))}).\n\n"
            "| run | seconds |\n|---|---|\n"
            f"| instructlab-training `process_data` called directly | {backend_s:.1f} s |\n"
            f"| hpc-sft data cache, first job (content key + the same processing + publish) | {cold_s:.1f} s |\n"
            f"| hpc-sft data cache hit (every requeue; median of 5) | {statistics.median(hits):.2f} s "
            f"(max {max(hits):.2f} s) |\n\n"
            "The hit costs hashing the data and tokenizer files for the content key (sha256 of the JSONL) and "
            "one stat of the published marker.")
    write_section("dataprep", body)
    shutil.rmtree(root, ignore_errors=True)


# datasets caches its Arrow conversion of a JSON file by content: each timed run starts with an empty cache,
# or the second one would reuse the first one's work
DATASETS_CACHE = Path(tempfile.mkdtemp(prefix="hpc-sft-bench-datasets-", dir="/tmp"))


def cold_datasets_cache() -> None:
    shutil.rmtree(DATASETS_CACHE, ignore_errors=True)
    DATASETS_CACHE.mkdir()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["HF_DATASETS_CACHE"] = str(DATASETS_CACHE)  # before datasets is imported
    main()
    shutil.rmtree(DATASETS_CACHE, ignore_errors=True)
