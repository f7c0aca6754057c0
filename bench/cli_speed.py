"""Login-node speed: wall time and peak RSS of `hpc-sft --help`, `submit --dry-run`, `status` vs `import submitit`.

Run: .venv/bin/python bench/cli_speed.py [--repeat N]   (status is measured when a Slurm cluster answers)
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
from _report import write_section  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def measure(cmd: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one run of cmd, from wait4's rusage for exactly that child."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return elapsed, usage.ru_maxrss / 1024


def fixture(folder: Path) -> Path:
    (folder / "model").mkdir()
    (folder / "model" / "config.json").write_text("{}")
    msg = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    (folder / "train.jsonl").write_text((json.dumps(msg) + "\n") * 1000)
    recipe = folder / "recipe.toml"
    recipe.write_text('executor = "slurm"\n[sft]\nmodel_path = "./model"\ndata_path = "train.jsonl"\n'
                      'ckpt_output_dir = "ckpt"\nnum_epochs = 1\neffective_batch_size = 8\nlearning_rate = 1e-4\n'
                      'max_seq_len = 256\nmax_tokens_per_gpu = 2048\n[slurm]\nnodes = 2\n')
    return recipe


def status_job(home: Path, folder: Path) -> str | None:
    """A job record for `status` (a finished 1-second job), when a cluster answers."""
    if not shutil.which("sbatch") or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        return None
    job = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true"], capture_output=True, text=True, check=True)
    job_id = job.stdout.strip()
    (home / "jobs").mkdir(parents=True)
    (home / "jobs" / f"{job_id}.json").write_text(json.dumps(
        {"job_id": job_id, "folder": str(folder), "nodes": 1, "ckpt_output_dir": str(folder / "ckpt")}))
    time.sleep(2)
    return job_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hpc-sft-bench-"))
    recipe = fixture(folder)
    env = {**os.environ, "HPC_SFT_HOME": str(folder / "home")}
    cases = {"python -c 'import submitit' (baseline)": [sys.executable, "-c", "import submitit"],
             "hpc-sft --help": [str(VENV_BIN / "hpc-sft"), "--help"],
             "hpc-sft submit recipe.toml --dry-run": [str(VENV_BIN / "hpc-sft"), "submit", str(recipe), "--dry-run"]}
    job_id = status_job(folder / "home", folder)
    if job_id:
        cases["hpc-sft status JOB"] = [str(VENV_BIN / "hpc-sft"), "status", job_id]
    rows, base = [], None
    for name, cmd in cases.items():
        runs = [measure(cmd, env) for _ in range(args.repeat)]
        secs = statistics.median(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        base = base or (secs, rss)
        rows.append(f"| `{name}` | {secs * 1000:.0f} ms | {secs / base[0]:.2f}x | {rss:.0f} MiB |")
        print(rows[-1])
    body = ("## Login-node commands (`bench/cli_speed.py`)\n\n"
            f"Median wall time of {args.repeat} runs, and the largest peak RSS. Goal: at most 3x the time of "
            "`import submitit` and at most 60 MB.\n\n| command | wall | vs baseline | peak RSS |\n|---|---|---|---|\n"
            + "\n".join(rows) + ("" if job_id else "\n\n(status not measured: no Slurm cluster answered)"))
    write_section("cli", body)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
