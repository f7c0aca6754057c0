"""`hpc-sft plot`: the picture of a real interrupted and resumed local run (instructlab-training on CPU): a PNG
of the expected size whose lines are the metrics' final lineage, the stop marked where the run saved, a
sweep's tasks overlaid and labelled; clear errors for missing data and for a missing matplotlib."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, tiny_sft_kwargs
from tests.resume_helpers import newest_metadata
from tests.test_local_runs import CLI, after_steps, run_child, write_recipe

METRICS = "training_params_and_metrics_global0.jsonl"
SIZE = (1210, 825)  # figsize (11, 7.5) at 110 dpi
BLOCK_MATPLOTLIB = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from hpc_sft.cli import main
main()
"""


def plot_cli(env: dict, *args: str, code: str = "") -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code, "plot", *args] if code else [*CLI, "plot", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=120)


def final_lineage(ckpt: Path) -> list[dict]:
    """What the metrics file says the final model trained through: per-step records, a later one winning at
    the same samples_seen (computed here independently of hpc_sft.plot)."""
    by_samples = {}
    for line in (ckpt / METRICS).read_text().splitlines():
        rec = json.loads(line)
        if "samples_seen" in rec and "step" in rec:
            by_samples[rec["samples_seen"]] = rec
    return [by_samples[s] for s in sorted(by_samples)]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def lines_by_gid(fig) -> dict:
    return {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}


@pytest.fixture(scope="module")
def interrupted_run(tiny_model, tiny_data, tmp_path_factory) -> dict:
    """A real local run through the CLI: Ctrl-C (SIGINT to its process group) after step 4 of 16, then the same
    command again, which resumes from the full state saved and finishes."""
    pytest.importorskip("instructlab.training", reason="instructlab-training is not installed")
    folder = tmp_path_factory.mktemp("plot_run")
    env = dict(os.environ, HPC_SFT_HOME=str(folder / "home"))
    ckpt = folder / "ckpt"
    recipe = write_recipe(folder, tiny_sft_kwargs(tiny_model, tiny_data, ckpt))
    first = run_child([*CLI, "submit", str(recipe)], ckpt, env, after_steps(4), signal.SIGINT)
    assert first["sent"] and first["code"] == 130, first["err"][-3000:]
    saved = newest_metadata(ckpt)["samples_seen"]
    assert 0 < saved < 256, saved
    second = run_child([*CLI, "submit", str(recipe)], ckpt, env)
    assert second["code"] == 0 and "(256 samples seen)" in second["out"], second["err"][-3000:]
    return {"ckpt": ckpt, "env": env, "saved": saved, "folder": folder}


@pytest.mark.training
def test_plot_of_a_resumed_run_is_its_final_lineage_with_the_stop_marked(interrupted_run, tmp_path, monkeypatch):
    ckpt, env, saved = interrupted_run["ckpt"], interrupted_run["env"], interrupted_run["saved"]
    out = tmp_path / "loss.png"
    run = plot_cli(env, str(ckpt), "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"wrote {out} (") and "finished, 1 stop, 256 of 256 samples" in run.stdout, run.stdout
    assert png_size(out) == SIZE
    from matplotlib.image import imread

    pixels = imread(out)
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::97]}) > 20  # lines and text, not blank

    # what the PNG was drawn from: the same resolve + figure the command ran, looked at line by line
    from hpc_sft import plot

    monkeypatch.setenv("HPC_SFT_HOME", env["HPC_SFT_HOME"])
    found = plot.resolve(str(ckpt))
    assert [label for label, _ in found.curves] == ["ckpt"]
    assert found.title.endswith("finished, 1 stop, 256 of 256 samples"), found.title
    fig = plot.figure(found.curves, found.title)
    lines, expected = lines_by_gid(fig), final_lineage(ckpt)
    assert [r["samples_seen"] for r in expected] == list(range(16, 257, 16))  # every step once, resumed ones too
    assert list(lines["loss:ckpt"].get_xdata()) == [r["samples_seen"] for r in expected]
    assert list(lines["loss:ckpt"].get_ydata()) == [r["avg_loss"] for r in expected]
    assert list(lines["lr:ckpt"].get_ydata()) == [r["lr"] for r in expected]
    mark = lines["restart:ckpt:1"]
    assert list(mark.get_xdata()) == [saved]
    assert list(mark.get_ydata()) == [next(r["avg_loss"] for r in expected if r["samples_seen"] == saved)]
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["stop 1: Ctrl-C (SIGINT)"], texts
    dashed = [line for line in fig.axes[1].get_lines() if line.get_linestyle() == "--"]
    assert [list(line.get_xdata()) for line in dashed] == [[saved, saved]]  # on the learning-rate panel too

    # by job id: the resumed (last) run's record names the same directory
    last = max((json.loads(p.read_text()) for p in Path(env["HPC_SFT_HOME"], "jobs").glob("*.json")),
               key=lambda rec: rec["submitted"])
    by_id = plot_cli(env, last["job_id"], "-o", str(tmp_path / "by-id.png"))
    assert by_id.returncode == 0 and f"job {last['job_id']} (" in by_id.stdout, by_id.stderr
    assert png_size(tmp_path / "by-id.png") == SIZE


@pytest.mark.training
def test_without_job_records_the_resume_is_found_in_the_metrics_file(interrupted_run, tmp_path):
    """Another HPC_SFT_HOME (another machine): no record says why, the metrics file still says where."""
    from hpc_sft import plot

    curve = plot.read_curve(interrupted_run["ckpt"])
    assert curve.restarts == (plot.Restart(interrupted_run["saved"], "resume 1", "resume"),)
    run = plot_cli(dict(interrupted_run["env"], HPC_SFT_HOME=str(tmp_path / "elsewhere")),
                   str(interrupted_run["ckpt"]), "-o", str(tmp_path / "loss.png"))
    assert run.returncode == 0 and run.stdout.endswith(": 1 resume, 256 of 256 samples)\n"), run.stdout + run.stderr


@pytest.mark.training
def test_a_sweep_overlays_its_tasks_labelled_by_name(interrupted_run, tmp_path, monkeypatch):
    """A sweep root (sweep.json) naming the real run and a second task, made here by copying the run's metrics
    and status with every loss halved (a second real training run would add a minute for no new code path)."""
    first = interrupted_run["ckpt"]
    second = tmp_path / "task-1"
    second.mkdir()
    rows = [json.loads(line) for line in (first / METRICS).read_text().splitlines()]
    halved = [dict(r, avg_loss=r["avg_loss"] / 2) if "avg_loss" in r else r for r in rows]
    (second / METRICS).write_text("".join(json.dumps(r) + "\n" for r in halved))
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "sweep.json").write_text(json.dumps({"tasks": [
        {"name": "lr=1e-3", "dir": str(first), "values": {"learning_rate": 1e-3}},
        {"name": "lr=2e-3", "dir": str(second), "values": {"learning_rate": 2e-3}},
        {"name": "lr=4e-3", "dir": str(tmp_path / "not-started"), "values": {"learning_rate": 4e-3}}]}))
    out = tmp_path / "sweep.png"
    run = plot_cli(interrupted_run["env"], str(root), "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert "sweep" in run.stdout and "2 tasks" in run.stdout, run.stdout
    assert f"no metrics yet for lr=4e-3 ({tmp_path / 'not-started'}); left out" in run.stderr
    assert png_size(out)[1] == SIZE[1]

    from hpc_sft import plot

    monkeypatch.setenv("HPC_SFT_HOME", interrupted_run["env"]["HPC_SFT_HOME"])
    found = plot.resolve(str(root))
    fig = plot.figure(found.curves, found.title)
    lines, expected = lines_by_gid(fig), final_lineage(first)
    assert list(lines["loss:lr=1e-3"].get_ydata()) == [r["avg_loss"] for r in expected]
    assert list(lines["loss:lr=2e-3"].get_ydata()) == [r["avg_loss"] / 2 for r in expected]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["lr=1e-3", "lr=2e-3"]
    assert fig.legends[0].get_title().get_text() == "task"
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["lr=1e-3, stop 1: Ctrl-C (SIGINT)", "lr=2e-3, resume 1"], texts  # which task each mark is


# ---------------------------------------------------------------- no training


def test_no_run_data_is_one_clear_line_naming_the_target(tmp_path):
    env = dict(os.environ, HPC_SFT_HOME=str(tmp_path / "home"))
    empty = tmp_path / "ckpt"
    empty.mkdir()
    run = plot_cli(env, str(empty), "-o", str(tmp_path / "x.png"))
    assert run.returncode == 1 and run.stdout == "", run
    assert run.stderr == (f"hpc-sft: error: {empty}: no metrics file ({METRICS}); the run has not logged a step yet. "
                          "Fix: wait for its first optimizer step (`hpc-sft status` shows progress), or check the "
                          "path\n")
    (empty / METRICS).write_text(json.dumps({"num_epochs": 1}) + "\n")  # a header, no step yet
    run = plot_cli(env, str(empty), "-o", str(tmp_path / "x.png"))
    assert run.returncode == 1 and f"{empty}: {METRICS} has no per-step records yet" in run.stderr, run.stderr
    missing = plot_cli(env, str(tmp_path / "nope"), "-o", str(tmp_path / "x.png"))
    assert missing.returncode == 3 and missing.stderr == (
        f"hpc-sft: error: TARGET: {tmp_path / 'nope'} does not exist. Fix: pass a job id, a sweep folder or a "
        "ckpt_output_dir\n"), missing.stderr
    job = plot_cli(env, "12345", "-o", str(tmp_path / "x.png"))
    assert job.returncode == 2 and "no record of job 12345" in job.stderr and len(job.stderr.splitlines()) == 1
    (empty / "sweep.json").write_text(json.dumps({"tasks": [{"name": "a", "dir": str(tmp_path / "a")}]}))
    sweep = plot_cli(env, str(empty), "-o", str(tmp_path / "x.png"))
    assert sweep.returncode == 1 and "no task of the sweep in" in sweep.stderr and "1 task directory" in sweep.stderr
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_the_error_says_how_to_install_it(tmp_path):
    """matplotlib blocked by an import hook in the child: one line giving the extra to install, no traceback."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    step = {"step": 1, "samples_seen": 16, "timestamp": "2026-01-01T00:00:00", "avg_loss": 2.0, "lr": 1e-4}
    (ckpt / METRICS).write_text(json.dumps(step) + "\n")
    env = dict(os.environ, HPC_SFT_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    run = plot_cli(env, str(ckpt), "-o", str(tmp_path / "x.png"), code=BLOCK_MATPLOTLIB)
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("hpc-sft: error: hpc-sft plot needs matplotlib, which is not installed")
    assert "Fix: pip install 'hpc-sft[plot]'" in run.stderr and len(run.stderr.splitlines()) == 1, run.stderr
    assert not (tmp_path / "x.png").exists()
    ok = plot_cli(env, str(ckpt), "-o", str(tmp_path / "x.png"))  # without the hook: the hook made it fail
    assert ok.returncode == 0 and png_size(tmp_path / "x.png") == SIZE, ok.stderr


def test_cli_and_plot_module_import_without_matplotlib():
    code = ("import sys; from click.testing import CliRunner; from hpc_sft.cli import main; import hpc_sft.plot; "
            "r = CliRunner().invoke(main, ['plot', '--help']); assert r.exit_code == 0, r.output; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'matplotlib']; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_lineage_later_records_win_and_resumes_are_seen():
    """The metrics file's final lineage and its resumes, for both backends' ways of logging a resume."""
    from hpc_sft.plot import lineage

    def step(samples, loss=1.0, **extra):
        return {"step": samples // 16, "samples_seen": samples, "timestamp": "t", "avg_loss": loss,
                "batch_size": 16, **extra}

    # instructlab-training: a new run writes its header records, then steps after the saved state (64)
    ilt = [{"num_epochs": 1}, step(16), step(32), step(48), {"num_epochs": 1}, {"total_samples": 256}, step(80)]
    kept, resumes = lineage(ilt)
    assert [r["samples_seen"] for r in kept] == [16, 32, 48, 80] and resumes == [64]
    # trl: one header; steps past the last checkpoint (32) logged again by the resumed run, which wins
    trl = [{"backend": "trl"}, step(16), step(32), step(48, 5.0), step(64, 5.0),
           {"step": 4, "timestamp": "t", "train_runtime": 9.5}, step(48, 1.5), step(64, 1.25)]
    kept, resumes = lineage(trl)
    assert [(r["samples_seen"], r["avg_loss"]) for r in kept] == [(16, 1.0), (32, 1.0), (48, 1.5), (64, 1.25)]
    assert resumes == [32]
    # a resumed run that has not yet reached where the earlier one got to: the earlier run's tail is dropped
    kept, resumes = lineage([step(16), step(32), step(48), step(64), step(32, 2.0)])
    assert [(r["samples_seen"], r["avg_loss"]) for r in kept] == [(16, 1.0), (32, 2.0)] and resumes == [16]
    # a record of another kind between steps (an evaluation) is no resume
    kept, resumes = lineage([step(16), {"step": 1, "timestamp": "t", "eval_loss": 2.0}, step(32)])
    assert [r["samples_seen"] for r in kept] == [16, 32] and resumes == []


@pytest.mark.parametrize("reason, label", [
    ("interrupted (SIGUSR2) at restart 0; requeueing to resume from 272 samples", "time limit or preemption (USR2)"),
    ("interrupted (SIGTERM) at restart 2; requeueing to resume from 1280 samples", "preempted or cancelled (TERM)"),
    ("interrupted (checkpoint signal) at restart 0; requeueing to resume from 320 samples",
     "time limit or preemption"),
    ("hang: no progress for 16s in phase step (found by node 0 (node1)); requeueing to resume from 1200 samples; "
     "stuck: rank 1 (pid 22605) on node 1 (node2) is stopped (state T)", "hang: no progress for 16s in phase step"),
    ("node lost: node 1 (node2) did not stop within 15s of node 0's training failing (its host or slurmd died); "
     "requeueing to resume from 1616 samples", "node lost: node 1"),
    ("interrupted (SIGINT)", "Ctrl-C (SIGINT)"),
])
def test_stop_reasons_become_short_labels(reason, label):
    """Reasons as node 0 records them in the status record (taken from real runs' records)."""
    from hpc_sft.plot import why

    assert why(reason) == label


def test_a_recorded_real_sweep_overlays_four_tasks_and_marks_task_0s_requeue(tmp_path):
    """The real requeued sweep kept in tests/fixtures (array 26067015: task 0 requeued once and resumed), with
    the sweep.json its submission writes (record_sweep's fields), plotted through the command."""
    recorded = REPO / "tests" / "fixtures" / "slurm-22.05" / "sweep-run"
    root = tmp_path / "sweep"
    tasks = []
    for index, (lr, batch) in enumerate([("0.0001", 8), ("0.0001", 16), ("0.001", 8), ("0.001", 16)]):  # its grid
        name = f"{index}-learning_rate={lr}-effective_batch_size={batch}"
        shutil.copytree(recorded / f"task{index}", root / name)
        tasks.append({"index": index, "name": name,
                      "values": {"learning_rate": float(lr), "effective_batch_size": batch},
                      "job_id": f"26067015_{index}", "dir": str(root / name)})
    keys = ["learning_rate", "effective_batch_size"]
    (root / "sweep.json").write_text(json.dumps({"arrays": ["26067015"], "keys": keys, "tasks": tasks}))
    out = tmp_path / "sweep.png"
    run = plot_cli(dict(os.environ, HPC_SFT_HOME=str(tmp_path / "home")), str(root), "-o", str(out))
    assert run.returncode == 0 and "(sweep " in run.stdout and ": 4 tasks)" in run.stdout, run.stdout + run.stderr
    assert png_size(out)[1] == SIZE[1]

    from hpc_sft import plot

    found = plot.resolve(str(root))
    fig = plot.figure(found.curves, found.title)
    lines = lines_by_gid(fig)
    for task in tasks:
        expected = final_lineage(root / task["name"])
        assert list(lines[f"loss:{task['name']}"].get_ydata()) == [r["avg_loss"] for r in expected]
    stop = json.loads((recorded / "task0" / "hpc_sft_status.json").read_text())["stops"][0]
    assert stop["action"] == "requeue"
    assert list(lines[f"restart:{tasks[0]['name']}:1"].get_xdata()) == [stop["samples_seen"]]
    assert [k for k in lines if k.startswith("restart:")] == [f"restart:{tasks[0]['name']}:1"]
    assert [t.get_text() for t in fig.axes[0].texts] == [f"{tasks[0]['name']}, requeue 1: time limit or preemption"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [t["name"] for t in tasks]
