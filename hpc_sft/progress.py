"""Progress for `hpc-sft status`: Slurm or local-run state + the run's metrics and status record on disk (no torch)."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Optional

from . import executors, jobs, registry
from .config.sweep import SWEEP_FILE, fmt
from .rundir.layout import hf_checkpoints, metrics_file
from .rundir.status import read_status


def tail_lines(path: Path, max_bytes: int = 65536) -> list[str]:
    """The last lines of a file without reading all of it."""
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        data = fh.read().decode(errors="replace")
    lines = data.splitlines()
    return lines[1:] if size > max_bytes else lines


def step_metrics(ckpt_dir: Path) -> list[dict]:
    """The most recent per-step metric records (those with samples_seen)."""
    path = metrics_file(ckpt_dir)
    records = []
    for line in tail_lines(path) if path else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "samples_seen" in rec:
            records.append(rec)
    return records


def planned_epochs(ckpt_dir: Path) -> Optional[int]:
    path = metrics_file(ckpt_dir)
    if not path:
        return None
    with path.open() as fh:
        first = json.loads(fh.readline() or "{}")
    return first.get("num_epochs")


def eta_seconds(records: list[dict], total: Optional[int]) -> Optional[float]:
    if not total or len(records) < 2:
        return None
    t0, t1 = (datetime.fromisoformat(r["timestamp"]) for r in (records[0], records[-1]))
    done = records[-1]["samples_seen"] - records[0]["samples_seen"]
    seconds = (t1 - t0).total_seconds()
    if done <= 0 or seconds <= 0:
        return None
    return max(0.0, (total - records[-1]["samples_seen"]) * seconds / done)


def run_status(ckpt_dir: Path) -> dict:
    """What the checkpoint directory says: samples, loss, last checkpoint, stops recorded by hpc-sft."""
    records = step_metrics(ckpt_dir)
    last = records[-1] if records else {}
    epochs = planned_epochs(ckpt_dir)
    total = last.get("total_samples") * epochs if last.get("total_samples") and epochs else None
    ckpts = hf_checkpoints(ckpt_dir)
    last_ckpt = str(ckpts[-1][1]) if ckpts else newest_backend_checkpoint(ckpt_dir)
    record = read_status(ckpt_dir)
    return {"samples_seen": last.get("samples_seen"), "samples_total": total, "epoch": last.get("epoch"),
            "samples_per_epoch": last.get("total_samples"),
            "loss": last.get("avg_loss"), "last_checkpoint": last_ckpt,
            "eta_s": eta_seconds(records[-20:], total), "stops": record.get("stops", []),
            "outcome": record.get("outcome"), "save_s": measured_save_seconds(ckpt_dir)}


def measured_save_seconds(ckpt_dir: Path) -> Optional[float]:
    """The longest checkpoint save measured among the checkpoints kept (each backend asked through its hook)."""
    found = [s for b in registry.backend_classes() if (s := b.measured_save(Path(ckpt_dir))[0]) is not None]
    return max(found) if found else None


def newest_backend_checkpoint(ckpt_dir: Path) -> Optional[str]:
    """Before any hf_format/samples_N exists: the newest checkpoint a backend keeps in its own format
    (each registered backend is asked through its newest_checkpoint hook; none is imported heavily)."""
    for backend in registry.backend_classes():
        found = backend.newest_checkpoint(Path(ckpt_dir))
        if found is not None:
            return str(found)
    return None


def job_status(rec: dict) -> dict:
    """Status of a recorded Slurm job, sweep or local run."""
    if rec.get("kind") == "sweep":
        return sweep_status(rec)
    executor = executors.for_record(rec)
    info = {"job_id": rec["job_id"], "executor": executor.name, "ckpt_output_dir": rec["ckpt_output_dir"]}
    info.update(executor.job_state(rec).as_status())
    info.update(run_status(Path(rec["ckpt_output_dir"])))
    if hasattr(executor, "accounting"):  # Slurm: GPU-/CPU-hours from sacct
        info["accounting"] = executor.accounting(rec)
    newest = jobs.for_dir(rec["ckpt_output_dir"])
    info["newer_run"] = newest["job_id"] if newest and newest["job_id"] != rec["job_id"] else None
    return info


def dir_status(ckpt_dir: Path) -> dict:
    """Status of a ckpt_output_dir (or a sweep's): its newest recorded run, else what the directory says."""
    rec = jobs.for_dir(ckpt_dir)
    if rec is not None:
        return job_status(rec)
    if (Path(ckpt_dir) / SWEEP_FILE).is_file():  # a sweep recorded elsewhere (another HPC_SFT_HOME)
        body = json.loads((Path(ckpt_dir) / SWEEP_FILE).read_text())
        return sweep_status({"job_id": body["arrays"][0], "executor": "slurm", "kind": "sweep",
                             "ckpt_output_dir": str(ckpt_dir), **body})
    info = {"job_id": f"(no record) {ckpt_dir}", "executor": None, "ckpt_output_dir": str(ckpt_dir),
            "logs": None, "state": "UNKNOWN", "restarts": None, "elapsed": "",
            "headline": f"{ckpt_dir}: no run recorded (what the directory says)"}
    info.update(run_status(Path(ckpt_dir)))
    return info


def losses(ckpt_dir: Path) -> list[float]:
    """Every per-step loss of the run's metrics file, in order (the whole file: a sweep's best loss)."""
    path = metrics_file(ckpt_dir)
    found = []
    for line in path.read_text(errors="replace").splitlines() if path else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("avg_loss"), (int, float)) and "samples_seen" in rec:
            found.append(float(rec["avg_loss"]))
    return found


def task_row(task: dict, executor) -> dict:
    """One sweep task's line: its values, Slurm state and restarts, samples, last and best loss."""
    rec = {"job_id": task["job_id"], "folder": None, "ckpt_output_dir": task["dir"]}
    state = executor.job_state(rec)
    run = run_status(Path(task["dir"]))
    found = losses(Path(task["dir"]))
    return {"index": task["index"], "name": task["name"], "job_id": task["job_id"], "values": task["values"],
            "state": state.state, "restarts": state.restarts, "samples_seen": run["samples_seen"],
            "samples_total": run["samples_total"], "loss": run["loss"], "best_loss": min(found) if found else None,
            "outcome": run["outcome"], "dir": task["dir"]}


def sweep_status(rec: dict) -> dict:
    """Status of a sweep: one row per task, and the task that leads (lowest loss so far)."""
    executor = executors.for_record(rec)
    rows = [task_row(task, executor) for task in rec["tasks"]]
    scored = [row for row in rows if row["best_loss"] is not None]
    leader = min(scored, key=lambda row: row["best_loss"])["name"] if scored else None
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    states = ", ".join(f"{n} {state.lower()}" for state, n in counts.items())
    found = executor.accounting(rec) if hasattr(executor, "accounting") else None
    return {"job_id": rec["job_id"], "kind": "sweep", "executor": executor.name, "accounting": found,
            "ckpt_output_dir": rec["ckpt_output_dir"], "arrays": rec.get("arrays", [rec["job_id"]]),
            "keys": rec.get("keys", []), "max_parallel": rec.get("max_parallel"), "tasks": rows, "leader": leader,
            "headline": f"sweep {rec['job_id']}: {len(rows)} tasks ({states}) in {rec['ckpt_output_dir']}"}


def render_sweep(info: dict) -> str:
    """The sweep table: one row per task; '*' marks the task with the lowest loss so far."""
    def loss(value):
        return f"{value:.4f}" if value is not None else "-"

    head = ["", "task", "job", *info["keys"], "state", "restarts", "samples", "last loss", "best loss"]
    rows = [head]
    for row in info["tasks"]:
        samples = f"{row['samples_seen'] or 0}/{row['samples_total'] or '?'}"
        rows.append(["*" if row["name"] == info["leader"] else "", str(row["index"]), row["job_id"],
                     *(fmt(row["values"].get(k, "-")) for k in info["keys"]), row["state"],
                     str(row["restarts"] if row["restarts"] is not None else "-"), samples,
                     loss(row["loss"]), loss(row["best_loss"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [info["headline"], *("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)]
    if info["leader"]:
        lines.append(f"* leads (lowest loss so far): {info['leader']}")
    lines += (info.get("accounting") or {}).get("lines", [])
    lines.append(f"one task: hpc-sft status {info['tasks'][0]['job_id']}   |   "
                 f"logs: hpc-sft logs {info['tasks'][0]['job_id']}")
    return "\n".join(lines)


def bar(done: Optional[int], total: Optional[int], width: int = 30) -> str:
    if not done or not total:
        return "[" + " " * width + "]   0%"
    filled = min(width, int(width * done / total))
    return f"[{'#' * filled}{'.' * (width - filled)}] {100 * done / total:3.0f}%"


def resume_lines(info: dict) -> list[str]:
    """For an interrupted local run: where it stopped and how to go on."""
    if info.get("state") != "INTERRUPTED":
        return []
    where = (f"{info['last_complete_state']} at {info.get('state_samples')} samples"
             if info.get("last_complete_state") else "no full state saved")
    return [f"stopped by {info.get('signal')}: {where}; rerun the same command to resume"]


def render_status(info: dict) -> str:
    if info.get("kind") == "sweep":
        return render_sweep(info)
    lines = [info["headline"],
             f"progress: {bar(info['samples_seen'], info['samples_total'])} "
             f"{info['samples_seen'] or 0}/{info['samples_total'] or '?'} samples"
             + (f", epoch {info['epoch']}, loss {info['loss']:.4f}" if info.get("loss") is not None else ""),
             f"last checkpoint: {info['last_checkpoint'] or 'none yet'}"
             + (f" (a checkpoint save takes {info['save_s']:.1f} s)" if info.get("save_s") is not None else "")]
    if info.get("eta_s") and info.get("state") in ("RUNNING", "REQUEUED", "PENDING"):
        lines.append(f"eta: {info['eta_s'] / 60:.1f} min of training")
    for stop in info["stops"]:
        lines.append(f"stop #{stop.get('restart')}: {stop.get('reason')} at {stop.get('samples_seen')} samples")
    lines += resume_lines(info)
    if info.get("newer_run"):
        lines.append(f"newer run: {info['newer_run']} wrote to the same ckpt_output_dir since "
                     "(the progress above is the directory's now)")
    if info.get("outcome"):
        lines.append(f"outcome: {info['outcome']}")
    lines += (info.get("accounting") or {}).get("lines", [])
    lines.append(f"logs: {info['logs'] or 'none recorded'}")
    return "\n".join(lines)
