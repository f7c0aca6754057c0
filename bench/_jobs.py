"""Run one tiny training job on the test cluster, hand-written sbatch or `hpc-sft submit`, and time its parts."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, STAMP, sft_kwargs, stamp, step_records, ts  # noqa: E402

from hpc_sft import executors, jobs  # noqa: E402
from hpc_sft.rundir.layout import hf_checkpoints  # noqa: E402

HANDWRITTEN = REPO / "bench" / "handwritten.sbatch"
VENV = Path(sys.executable).parent.parent
EPOCHS = 2
KINDS = ("handwritten", "hpc-sft")


@dataclass(frozen=True)
class Timing:
    """Seconds from the allocation's start (its batch script's first line) to each mark."""

    rendezvous: float  # every rank's torchrun worker started (the rendezvous let them go)
    first_step: float
    final_checkpoint: float
    samples: int
    parts: tuple = ()  # hpc-sft: (name, seconds from the allocation's start) of node 0's milestones


# node 0's milestones in an hpc-sft job's log: (name, the line's marker)
MILESTONES = (("submitit started the node task", "- Starting with JobEnvironment"),
              ("data ready (cache hit)", "hpc_sft.data INFO: data cache"),
              ("torchrun launched", "Running training command as subprocess"))
def milestones(log: Path, start: float) -> tuple:
    """Seconds from `start` to the first line of each milestone in node 0's log."""
    found = []
    lines = log.read_text(errors="replace").splitlines()
    for name, marker in MILESTONES:
        line = next((text for text in lines if marker in text and STAMP.search(text)), None)
        if line is not None:
            found.append((name, stamp(line) - start))
    return tuple(found)


def main_ds() -> str:
    import importlib.util

    return str(Path(importlib.util.find_spec("instructlab.training").submodule_search_locations[0]) / "main_ds.py")


def pretokenize(model: Path, data: Path, out: Path) -> Path:
    """The hand-written path's data step, done once before any timed run (the backend's own function)."""
    from hpc_sft.backends.instructlab.backend import InstructLabTrainingSFTBackend
    from hpc_sft.config.validate import build_config, split_values

    if not (out / "data.jsonl").is_file():
        config = build_config(*split_values(sft_kwargs(model, data, out.parent / "unused", num_epochs=EPOCHS)))
        InstructLabTrainingSFTBackend().process_data(config, str(out))
    return out


def wait_job(job_id: str, timeout: float = 900) -> str:
    """Slurm's final state of the job (the handle's own notion of ended)."""
    from hpc_sft.executors.slurm.job import SlurmJob

    job, deadline = SlurmJob(job_id, Path("."), 1), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job.done():
            return job.state
        time.sleep(0.5)
    raise SystemExit(f"job {job_id} did not end in {timeout:.0f}s")


def timing(ckpt: Path, started_dir: Path) -> Timing:
    start = float((ckpt / "allocation_started").read_text())
    ranks = [float(p.read_text()) for p in started_dir.glob("rank*")]
    records = [r for r in step_records(ckpt) if ts(r) > start]  # a resumed run's copy holds earlier steps too
    final = hf_checkpoints(ckpt)[-1][1]
    written = max(p.stat().st_mtime for p in final.iterdir())
    return Timing(max(ranks) - start, ts(records[0]) - start, written - start, records[-1]["samples_seen"])


def handwritten(model: Path, data_dir: Path, ckpt: Path, nodes: int) -> Timing:
    """sbatch bench/handwritten.sbatch on `nodes` nodes; its timing once it has ended (a ckpt that exists already
    holds a full state: instructlab-training resumes from it, as a by-hand rerun would)."""
    started = ckpt.parent / "started"
    for folder in (ckpt, started):
        folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MODEL": str(model), "DATA_DIR": str(data_dir), "CKPT": str(ckpt), "VENV": str(VENV),
           "REPO": str(REPO), "MAIN_DS": main_ds(), "HPC_SFT_WORKER_STARTED_DIR": str(started)}
    out = subprocess.run(["sbatch", "--parsable", "-N", str(nodes), "-o", str(ckpt.parent / "job-%j.out"),
                          str(HANDWRITTEN)], env=env, capture_output=True, text=True, check=True)
    state = wait_job(out.stdout.strip().split(";")[0])
    if state != "COMPLETED":
        raise SystemExit(f"hand-written job ended {state}; see {ckpt.parent}")
    return timing(ckpt, started)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def recipe(model: Path, data: Path, ckpt: Path, data_dir: Path, nodes: int) -> str:
    """The same job as a recipe; the [slurm] setup lines start the clock as the hand-written script does."""
    sft = sft_kwargs(model, data, ckpt, num_epochs=EPOCHS, data_output_dir=str(data_dir))
    setup = [f"mkdir -p {shlex.quote(str(ckpt))}", f"date +%s.%N > {shlex.quote(str(ckpt / 'allocation_started'))}"]
    slurm = {"nodes": nodes, "partition": "main", "time": "00:30:00", "setup": setup}
    lines = ['executor = "slurm"', "[sft]", *(f"{k} = {toml_value(v)}" for k, v in sft.items()),
             "[slurm]", *(f"{k} = {toml_value(v)}" for k, v in slurm.items())]
    return "\n".join(lines) + "\n"


def hpc_sft(model: Path, data: Path, ckpt: Path, data_dir: Path, nodes: int) -> Timing:
    """`hpc-sft submit recipe.toml` on `nodes` nodes; its timing once the job has ended."""
    started = ckpt.parent / "started"
    started.mkdir(parents=True)
    path = ckpt.parent / "recipe.toml"
    path.write_text(recipe(model, data, ckpt, data_dir, nodes))
    env = {**os.environ, "HPC_SFT_WORKER_STARTED_DIR": str(started)}
    out = subprocess.run([str(VENV / "bin" / "hpc-sft"), "submit", str(path)], env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"hpc-sft submit failed: {out.stderr}")
    job_id = out.stdout.split("submitted job ")[1].split()[0]
    state = wait_job(job_id)
    if state != "COMPLETED":
        raise SystemExit(f"hpc-sft job {job_id} ended {state}; see {ckpt}/slurm")
    found = timing(ckpt, started)
    log = executors.get("slurm").log_path(jobs.lookup(job_id), 0, stderr=False)
    return replace(found, parts=milestones(log, float((ckpt / "allocation_started").read_text())))


def run(kind: str, root: Path, name: str, model: Path, data: Path, data_dirs: dict, nodes: int) -> Optional[Timing]:
    ckpt = root / name / "ckpt"
    if kind == "handwritten":
        return handwritten(model, data_dirs["handwritten"], ckpt, nodes)
    return hpc_sft(model, data, ckpt, data_dirs["hpc-sft"], nodes)
