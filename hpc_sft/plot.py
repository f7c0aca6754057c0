"""`hpc-sft plot`: loss and learning rate against samples seen, requeues marked, sweep tasks overlaid."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from . import jobs
from .config.sweep import SWEEP_FILE  # a sweep root: {"tasks": [{"name", "dir", "values", ...}, ...]}
from .errors import HpcSftError, MissingPathError
from .rundir.layout import METRICS_FILE
from .rundir.status import read_status

RESTART_ACTIONS = ("requeue", "resubmit", "stop")  # stops after which training went on (or may go on)
SHORT_WHY = (  # (text in a stop's reason, what the mark says), first match wins
    ("(SIGUSR2)", "time limit or preemption (USR2)"), ("(SIGUSR1)", "time limit or preemption (USR1)"),
    ("(SIGTERM)", "preempted or cancelled (TERM)"), ("(SIGINT)", "Ctrl-C (SIGINT)"),
    ("(SIGHUP)", "hangup (HUP)"), ("(checkpoint signal)", "time limit or preemption"))
LABEL_CHARS = 44
INSTALL_FIX = "pip install 'hpc-sft[plot]' (or: pip install 'matplotlib>=3.8')"


@dataclass(frozen=True)
class Restart:
    """Where training stopped and went on again: samples seen at the stop, and a short label saying why."""

    samples: int
    label: str  # 'requeue 1: time limit or preemption (USR2)'
    kind: str = "resume"  # requeue | resubmit | stop | resume (seen in the metrics file only)


@dataclass(frozen=True)
class Curve:
    """One run's final lineage: per-step samples seen, loss and learning rate (NaN where a step lacks it)."""

    samples: tuple[int, ...]
    loss: tuple[float, ...]
    lr: tuple[float, ...]
    restarts: tuple[Restart, ...] = ()
    samples_per_epoch: Optional[int] = None
    samples_total: Optional[int] = None  # samples per epoch x epochs planned, when the metrics say both
    outcome: Optional[str] = None


@dataclass(frozen=True)
class Target:
    """What `hpc-sft plot TARGET` draws: labelled curves, a title, and the runs left out (no metrics yet)."""

    title: str
    curves: tuple[tuple[str, Curve], ...]
    missing: tuple[str, ...] = ()


# ---------------------------------------------------------------- reading (no matplotlib)


def number(rec: dict, *keys: str) -> float:
    """The first of `keys` that holds a number, else NaN."""
    for key in keys:
        value = rec.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return math.nan


def read_records(path: Path) -> list[dict]:
    """Every complete JSON line of a metrics file, in file order: per-step records (with samples_seen) and
    the header records a backend writes when a run starts."""
    records = []
    with path.open("rb") as fh:
        data = fh.read()
    for line in data[:data.rfind(b"\n") + 1].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def is_step(rec: dict) -> bool:
    return isinstance(rec.get("samples_seen"), int) and "timestamp" in rec and "step" in rec


def is_boundary(rec: dict) -> bool:
    """A record a backend writes where a run starts (its settings: no "step") or ends (trl's summary)."""
    return not is_step(rec) and ("step" not in rec or "train_runtime" in rec)


def lineage(records: Iterable[dict]) -> tuple[list[dict], list[int]]:
    """The final lineage of per-step records, and the samples seen at each resume the file itself shows.

    After a resume from a state saved at N samples a backend logs steps past N again (trl re-runs the steps
    after its last checkpoint; instructlab-training starts a new block of header records): a later record
    wins over an earlier one at the same or a larger samples_seen, so the earlier run's steps past N, which
    the final model never trained on, are dropped. A resume is seen where a run's header follows steps, or
    where samples_seen goes back; it resumed from (first step's samples_seen - that step's batch). Other
    records (no samples_seen, e.g. an evaluation) are skipped."""
    kept: list[dict] = []
    resumes: list[int] = []
    header_since_step = False
    for rec in records:
        if not is_step(rec):
            header_since_step = header_since_step or (is_boundary(rec) and bool(kept))
            continue
        samples = rec["samples_seen"]
        if header_since_step or (kept and samples <= kept[-1]["samples_seen"]):
            batch = rec.get("batch_size")
            resumes.append(max(0, samples - batch) if isinstance(batch, int) else samples)
        header_since_step = False
        while kept and kept[-1]["samples_seen"] >= samples:
            kept.pop()
        kept.append(rec)
    return kept, resumes


def why(reason: str) -> str:
    """A stop's reason, short enough to label a mark: the signal's likely cause, else its first clause."""
    for needle, short in SHORT_WHY:
        if needle in reason:
            return short
    first = reason.split(";")[0].strip() or "stopped"
    if len(first) > LABEL_CHARS and " (" in first:
        first = first.split(" (")[0]  # 'hang: no progress for 16s in phase step (found by node 0 (node1))'
    return first if len(first) <= LABEL_CHARS else first[:LABEL_CHARS - 1].rsplit(" ", 1)[0] + "…"


def restarts_from(stops: Sequence[dict], resumes: Sequence[int]) -> tuple[Restart, ...]:
    """Marks from the stops recorded (status record, local runs' records), oldest first; where none were
    recorded, from the resumes the metrics file shows."""
    chosen = sorted((s for s in stops if s.get("action") in RESTART_ACTIONS), key=lambda s: s.get("time") or 0)
    if chosen:
        return tuple(Restart(int(s.get("samples_seen") or 0), f"{s['action']} {n}: {why(str(s.get('reason', '')))}",
                             s["action"]) for n, s in enumerate(chosen, 1))
    return tuple(Restart(samples, f"resume {n}") for n, samples in enumerate(resumes, 1))


def planned_epochs(records: Sequence[dict]) -> Optional[int]:
    """num_epochs from the header record a backend writes first (both backends do)."""
    for rec in records:
        if not is_step(rec) and isinstance(rec.get("num_epochs"), int):
            return rec["num_epochs"]
    return None


def read_curve(ckpt_dir, local_runs: Sequence[dict] = ()) -> Curve:
    """The curve of one run directory, from its metrics file and status record ("stops", "outcome"), and
    the job records of the local runs that trained in it (local_runs_in: local runs record their stops
    there, not in the status record). Reads only; HpcSftError when there are no per-step metrics yet."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / METRICS_FILE
    if not path.is_file():
        raise HpcSftError(f"{ckpt_dir}: no metrics file ({METRICS_FILE}); the run has not logged a step yet",
                          "wait for its first optimizer step (`hpc-sft status` shows progress), or check the path")
    records = read_records(path)
    steps, resumes = lineage(records)
    if not steps:
        raise HpcSftError(f"{ckpt_dir}: {METRICS_FILE} has no per-step records yet",
                          "wait for the run's first optimizer step (`hpc-sft status` shows progress)")
    status = read_status(ckpt_dir)
    per_epoch = steps[-1].get("total_samples")
    per_epoch = per_epoch if isinstance(per_epoch, int) and per_epoch > 0 else None
    epochs = planned_epochs(records)
    local_outcome = jobs.local_state(local_runs[-1])["state"].lower() if local_runs else None  # died too
    return Curve(samples=tuple(r["samples_seen"] for r in steps),
                 loss=tuple(number(r, "avg_loss", "loss") for r in steps),
                 lr=tuple(number(r, "lr", "learning_rate") for r in steps),
                 restarts=restarts_from([*status.get("stops", []), *map(local_stop, local_runs)], resumes),
                 samples_per_epoch=per_epoch, samples_total=per_epoch * epochs if per_epoch and epochs else None,
                 outcome=status.get("outcome") or local_outcome)


def local_stop(rec: dict) -> dict:
    """A local run's job record as a status-record stop (an action RESTART_ACTIONS counts if interrupted):
    its signal, and the samples of the full state it saved."""
    interrupted = rec.get("state") == "INTERRUPTED" and isinstance(rec.get("samples_seen"), int)
    return {"action": "stop" if interrupted else "end", "reason": f"interrupted ({rec.get('signal')})",
            "samples_seen": rec.get("samples_seen"), "time": rec.get("ended") or rec.get("submitted")}


def local_runs_in(ckpt_dir) -> list[dict]:
    """The job records (HPC_SFT_HOME/jobs) of the local runs that trained in ckpt_dir, oldest first."""
    target = Path(ckpt_dir).resolve()
    return sorted((rec for rec in jobs.all_records() if jobs.executor_of(rec) == "local"
                   and Path(rec.get("ckpt_output_dir", "")).resolve() == target),
                  key=lambda rec: rec.get("submitted") or 0)


def load_curve(ckpt_dir) -> Curve:
    return read_curve(ckpt_dir, local_runs_in(ckpt_dir))


# ---------------------------------------------------------------- what TARGET names


def sweep_tasks(root: Path) -> list[tuple[str, Path]]:
    """(name, ckpt_output_dir) of every task of a sweep root's sweep.json."""
    path = root / SWEEP_FILE
    try:
        tasks = json.loads(path.read_text())["tasks"]
        return [(str(t["name"]), root / t["dir"]) for t in tasks]  # absolute; a relative one: from the root
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HpcSftError(f"{path}: not a readable sweep file ({type(exc).__name__}: {exc})",
                          'it should hold {"tasks": [{"name": ..., "dir": ...}, ...]}: resubmit the sweep') from exc


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def describe(curve: Curve) -> str:
    """'finished, 2 requeues, 512 of 512 samples'."""
    kinds = [mark.kind for mark in curve.restarts]
    parts = [curve.outcome] if curve.outcome else []
    parts += [plural(kinds.count(kind), kind) for kind in dict.fromkeys(kinds)] or ["no restarts"]
    total = f" of {curve.samples_total:,}" if curve.samples_total else ""
    return ", ".join([*parts, f"{curve.samples[-1]:,}{total} samples"])


def short_name(path: Path, limit: int = 60) -> str:
    """A title-sized name for a directory: its last two parts."""
    name = "/".join(Path(path).resolve().parts[-2:])
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def sweep_target(root: Path, title: str) -> Target:
    curves, missing = [], []
    for name, task_dir in sweep_tasks(root):
        try:
            curves.append((name, load_curve(task_dir)))
        except HpcSftError:
            missing.append(f"{name} ({task_dir})")
    if not curves:
        raise HpcSftError(f"{title}: no task of the sweep in {root} has logged a step yet "
                          f"(looked in {len(missing)} task director{'ies' if len(missing) != 1 else 'y'})",
                          "wait for the tasks to start (`hpc-sft status` shows them), or check the path")
    return Target(f"sweep {title}: {plural(len(curves), 'task')}", tuple(curves), tuple(missing))


def run_target(ckpt_dir: Path, title: str) -> Target:
    curve = load_curve(ckpt_dir)
    return Target(f"{title}: {describe(curve)}", ((ckpt_dir.name, curve),))


def resolve(target: str) -> Target:
    """TARGET: a sweep root (a directory with sweep.json), a ckpt_output_dir, or a job id (its record's
    ckpt_output_dir: a run directory or a sweep root)."""
    path = Path(target)
    if path.is_dir():
        title = short_name(path)
    elif "/" in target or target.startswith("."):
        raise MissingPathError("TARGET", target, "pass a job id, a sweep folder or a ckpt_output_dir")
    else:
        path = Path(jobs.lookup(target)["ckpt_output_dir"])
        title = f"job {target} ({short_name(path)})"
        if not path.is_dir():
            raise MissingPathError(f"job {target}'s ckpt_output_dir", str(path),
                                   "the run has not started yet (`hpc-sft status` says), or its directory was moved")
    if (path / SWEEP_FILE).is_file():
        return sweep_target(path, title)
    return run_target(path, title)


# ---------------------------------------------------------------- drawing (matplotlib, imported here only)


def matplotlib_figure():
    """matplotlib's Figure class (no pyplot: no global state, no display); HpcSftError naming the extra
    when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise HpcSftError(f"hpc-sft plot needs matplotlib, which is not installed ({exc})", INSTALL_FIX) from exc
    return Figure


def value_at(curve: Curve, samples: int, values: Sequence[float]) -> float:
    """The curve's value at the last step at or before `samples` (the first step when none is)."""
    index = max([i for i, s in enumerate(curve.samples) if s <= samples] or [0])
    return values[index]


def smoothed(values: Sequence[float]) -> list[float]:
    """A centred moving average over about 2% of the steps (no lag; NaNs skipped; narrower at the ends)."""
    half = max(2, len(values) // 100)
    out = []
    for i in range(len(values)):
        window = finite(values[max(0, i - half):i + half + 1])
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


SMOOTH_FROM = 300  # steps: below this the per-step line is drawn alone


def figure(curves: Sequence[tuple[str, Curve]], title: str):
    """The figure: loss over learning rate, x = samples seen. Each per-step line's gid is 'loss:LABEL' or
    'lr:LABEL' (the moving average of a long run's loss: 'loss-avg:LABEL'), each restart's marker on the
    loss curve 'restart:LABEL:N', N counting the marks of that curve (tests and callers find the plotted
    series by them)."""
    if not curves:
        raise ValueError("no curves to draw")
    fig = matplotlib_figure()(figsize=(11, 7.5), dpi=110, layout="constrained")
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, height_ratios=(2.2, 1))
    long = any(len(curve.samples) >= SMOOTH_FROM for _, curve in curves)
    shown = [smoothed(curve.loss) if long else list(curve.loss) for _, curve in curves]  # what marks sit on
    for index, ((label, curve), line) in enumerate(zip(curves, shown)):
        color = f"C{index % 10}"
        if long:
            loss_ax.plot(curve.samples, curve.loss, color=color, lw=0.8, alpha=0.3, gid=f"loss:{label}")
            loss_ax.plot(curve.samples, line, color=color, lw=1.8, label=label, gid=f"loss-avg:{label}")
        else:
            loss_ax.plot(curve.samples, line, color=color, lw=1.6, marker="." if len(line) <= 60 else "", ms=4,
                         label=label, gid=f"loss:{label}")
        lr_ax.plot(curve.samples, curve.lr, color=color, lw=1.6, label=label, gid=f"lr:{label}")
    values = finite(v for line in shown for v in line) or [0.0]
    low, span = min(values), (max(values) - min(values)) or 1.0
    end = max(max(c.samples_total or 0, c.samples[-1]) for _, c in curves)  # a running job: how far to go
    placed: dict = {}  # (x bucket, top) -> label lines already there: the next one goes beside them
    for index, ((label, curve), line) in enumerate(zip(curves, shown)):
        for n, (samples, marks) in enumerate(grouped(curve.restarts), 1):
            y = value_at(curve, samples, line)
            here = [(value_at(c, samples, other) - low) / span for (_, c), other in zip(curves, shown)]
            key = (round(samples / end * 100), free_band(here))
            mark_restarts(loss_ax, lr_ax, (label, n, len(curves) > 1), (samples, y, key[1], placed.get(key, 0)),
                          marks, f"C{index % 10}")
            placed[key] = placed.get(key, 0) + len(marks)
    loss_ax.set_ylabel("training loss" + (" (faint: per step; bold: moving average)" if long else " per step"))
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("samples seen")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    lr_ax.set_ylim(bottom=0)
    lr_ax.xaxis.set_major_formatter("{x:,.0f}")  # 250,000 (a str is a StrMethodFormatter)
    for ax in (loss_ax, lr_ax):
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0, end * 1.01)
    epoch_axis(loss_ax, curves)
    if len(curves) > 1:
        fig.legend(*loss_ax.get_legend_handles_labels(), title="task", loc="outside right upper", fontsize=9)
    fig.suptitle(title, fontsize=12)
    return fig


def free_band(heights: Sequence[float]) -> float:
    """Where a label at some x goes, in axes fraction, given the curves' heights there (0 to 1): the start
    of the widest band the curves leave free; 1 means the top band (the label hangs from the top)."""
    edges = sorted([0.0, 1.0, *(min(1.0, max(0.0, h)) for h in heights)])
    start, stop = max(zip(edges, edges[1:]), key=lambda band: band[1] - band[0])
    return 1.0 if stop >= 1.0 else round(start, 3)


def grouped(restarts: Sequence[Restart]) -> list[tuple[int, list[Restart]]]:
    """Restarts at the same samples seen (a run that made no progress before the next stop) as one mark."""
    groups: list[tuple[int, list[Restart]]] = []
    for mark in restarts:
        if groups and groups[-1][0] == mark.samples:
            groups[-1][1].append(mark)
        else:
            groups.append((mark.samples, [mark]))
    return groups


def mark_restarts(loss_ax, lr_ax, which: tuple[str, int, bool], where: tuple[int, float, bool, int],
                  marks: Sequence[Restart], color: str) -> None:
    """A dashed vertical line on both panels, a marker on the loss curve, and the labels beside the line.
    `which`: the curve's label, the mark's number, whether to name the curve; `where`: samples seen, the
    loss drawn there, where the labels start (free_band), label lines already beside it."""
    (label, n, named), (samples, y, band, beside) = which, where
    for ax in (loss_ax, lr_ax):
        ax.axvline(samples, color=color, ls="--", lw=1, alpha=0.7)
    loss_ax.plot([samples], [y], marker="o", ms=7, mfc="white", mec=color, mew=2, ls="none", zorder=5,
                 gid=f"restart:{label}:{n}")
    text = "\n".join(f"{label}, {m.label}" if named else m.label for m in marks)
    loss_ax.annotate(text, (samples, 0.98 if band == 1.0 else band + 0.03), xycoords=("data", "axes fraction"),
                     xytext=(3 + 10 * beside, 0), textcoords="offset points", rotation=90,
                     va="top" if band == 1.0 else "bottom",
                     ha="left", fontsize=8, color=color)


def epoch_axis(ax, curves: Sequence[tuple[str, Curve]]) -> None:
    """Whole epochs on a top axis, when the curves share their samples per epoch and span more than one."""
    from matplotlib.ticker import MaxNLocator

    per_epoch = {curve.samples_per_epoch for _, curve in curves}
    size = per_epoch.pop() if len(per_epoch) == 1 else None
    if not size or max(c.samples_total or c.samples[-1] for _, c in curves) <= size:
        return
    top = ax.secondary_xaxis("top", functions=(lambda s: s / size, lambda e: e * size))
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_xlabel("epoch")


def draw(curves: Sequence[tuple[str, Curve]], out: Path, title: str) -> Path:
    """Write the figure as a PNG (or any format matplotlib knows from `out`'s suffix); returns `out`."""
    out = Path(out)
    fig = figure(curves, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
