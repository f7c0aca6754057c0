"""Shared by the tests on the real Slurm cluster: run kwargs, waiting, preempting, reading progress."""
import json
import subprocess
import time
from pathlib import Path

import hpc_sft
from hpc_sft.executors.slurm import client as slurm_client
from hpc_sft.executors.slurm.node_task import PLAN_TAG
from hpc_sft.progress import step_metrics
from tests.helpers import tiny_sft_kwargs


def kwargs_for(tiny_model, data, ckpt, **over):
    return tiny_sft_kwargs(tiny_model, data, ckpt, **{"num_epochs": 2, **over})


def final_weights(result):
    return (result.checkpoint_path / "model.safetensors").read_bytes()


def samples_now(ckpt) -> int:
    records = step_metrics(ckpt)
    return records[-1]["samples_seen"] if records else 0


def wait_until(predicate, timeout_s, what, poll_s=0.3):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


def preempt() -> str:
    """A job in the high partition that needs all four nodes exclusively: Slurm preempts what runs there."""
    out = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "-p", "high", "-N", "4", "--exclusive", "-t", "5",
                          "--wrap", "sleep 1"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def preempt_at(job, targets, progress) -> None:
    """Preempt the job once progress() reaches each target in turn, waiting for each requeue."""
    for number, target in enumerate(targets, start=1):
        wait_until(lambda: progress() >= target, 300, f"{target} samples")
        preempt()
        wait_until(lambda: (slurm_client.slurm_state(job.job_id)["restarts"] or 0) >= number, 120, f"requeue #{number}")


def submit(tiny_model, data, ckpt, nodes, slurm_over=None, **over):
    slurm = {"nodes": nodes, "time": "00:30:00", "signal_lead_s": 60, "partition": "main", "max_requeues": 10}
    slurm.update(slurm_over or {})
    return hpc_sft.sft(**kwargs_for(tiny_model, data, ckpt, **over), executor="slurm", slurm=slurm)


def plan_hosts(job) -> list[list[str]]:
    """The hosts of each run of the job, in order (from every node's plan lines)."""
    runs: dict[int, list[str]] = {}
    for path in job.stdout_paths:
        count = 0
        for line in path.read_text().splitlines():
            if line.startswith(PLAN_TAG):
                runs.setdefault(count, []).append(json.loads(line[len(PLAN_TAG):])["host"])
                count += 1
    return [sorted(hosts) for _, hosts in sorted(runs.items())]


def worker_pid(ckpt, node_rank: int):
    """The pid of the instructlab-training worker of node `node_rank` that trains into ckpt (from /proc)."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if (any(arg.endswith(b"main_ds.py") for arg in argv) and f"--output_dir={ckpt}".encode() in argv
                and f"GROUP_RANK={node_rank}".encode() in environ):
            return int(entry.name)
    return None


def slurm_env_file(path: Path) -> dict:
    """`export K=V` lines of the cluster's env.sh, `$VAR` expanded from the environment as the shell would
    (24.11's env.sh has `export PATH="ROOT/bin:$PATH"`: its chroot client wrappers first)."""
    import os
    import shlex

    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = os.path.expandvars(shlex.split(value)[0]) if value else ""
    return env
