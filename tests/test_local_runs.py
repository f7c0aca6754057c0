"""Local runs are as safe as Slurm runs: Ctrl-C (SIGINT to the process group) or SIGTERM saves a full state
mid-epoch, ends with a clear message and exit code, `status`/`logs` show the run, and the rerun resumes to
weights bit-identical to an uninterrupted run. Real instructlab-training on CPU, real processes and signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, tiny_sft_kwargs
from tests.resume_helpers import FINAL_SAMPLES, final_weights, metric_records, newest_metadata

EPOCHS = 2  # 256 samples, batch 16: 16 steps per epoch
CLI = [sys.executable, "-m", "hpc_sft.cli"]
SFT_CHILD = r"""
import json, sys
import hpc_sft
from hpc_sft.errors import Interrupted
try:
    result = hpc_sft.sft(**json.loads(sys.argv[1]))
except Interrupted as exc:
    print("HPC_SFT_TEST_INTERRUPTED", exc.signal_name, exc.exit_code, str(exc), flush=True)
    sys.exit(3)
print("HPC_SFT_TEST_RESULT", result.samples_seen, flush=True)
"""


def toml_value(value) -> str:
    return json.dumps(value)  # strings, numbers and booleans read the same in TOML


def write_recipe(folder: Path, kwargs: dict) -> Path:
    path = folder / "recipe.toml"
    body = "".join(f"{key} = {toml_value(value)}\n" for key, value in kwargs.items())
    path.write_text(f'executor = "local"\n[sft]\n{body}')
    return path


def run_child(cmd: list[str], ckpt: Path, env: dict, interrupt=None, sig=signal.SIGINT, group: bool = True,
              timeout: float = 240, send=None) -> dict:
    """Run cmd in a new session; once ``interrupt(records)`` says so, send ``sig`` (to its process group:
    what a terminal's Ctrl-C does; or to the process alone), or call ``send(proc)`` instead."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    offset = (ckpt / "training_params_and_metrics_global0.jsonl").stat().st_size \
        if (ckpt / "training_params_and_metrics_global0.jsonl").is_file() else 0
    sent, deadline = False, time.monotonic() + timeout
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "run did not end in time"
            if interrupt is not None and not sent and interrupt(metric_records(ckpt, offset)):
                if send is not None:
                    send(proc)
                else:
                    (os.killpg if group else os.kill)(proc.pid, sig)
                sent = True
            time.sleep(0.02)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {"code": proc.returncode, "out": out, "err": err, "sent": sent}


def after_steps(n: int):
    return lambda records: any(r["epoch"] == 0 and r["step"] >= n for r in records)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """A fresh HPC_SFT_HOME (job records) for the module's children."""
    return dict(os.environ, HPC_SFT_HOME=str(tmp_path_factory.mktemp("hpc_sft_home")))


@pytest.fixture(scope="module")
def make_kwargs(tiny_model, tiny_data):
    def make(ckpt: Path) -> dict:
        return tiny_sft_kwargs(tiny_model, tiny_data, ckpt, num_epochs=EPOCHS)

    return make


@pytest.fixture(scope="module")
def reference(make_kwargs, env, tmp_path_factory) -> dict:
    """An uninterrupted local run of the same settings through the CLI: its output and final weights."""
    pytest.importorskip("instructlab.training", reason="instructlab-training is not installed")
    folder = tmp_path_factory.mktemp("uninterrupted")
    recipe = write_recipe(folder, make_kwargs(folder / "ckpt"))
    run = run_child([*CLI, "submit", str(recipe)], folder / "ckpt", env)
    assert run["code"] == 0, run["err"][-3000:]
    return {"ckpt": folder / "ckpt", "out": run["out"], "weights": final_weights(folder / "ckpt")}


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, cwd=REPO, timeout=120)


def assert_saved_mid_epoch(ckpt: Path, epoch: int) -> dict:
    meta = newest_metadata(ckpt)
    assert meta is not None and meta["global_step"] is not None, meta  # an on-demand save, not an epoch end
    assert meta["current_epoch"] == epoch and 0 < meta["samples_seen"] < FINAL_SAMPLES, meta
    return meta


@pytest.mark.training
def test_a_local_run_prints_progress_lines_not_the_backend_output(reference, env):
    lines = reference["out"].splitlines()
    assert f"finished: checkpoint {reference['ckpt']}/hf_format/samples_{FINAL_SAMPLES}" in reference["out"]
    assert len(lines) < 40, reference["out"]  # not the backend's 500+ lines
    steps = [line for line in lines if line.startswith("step ")]
    assert steps and all(f"/{FINAL_SAMPLES} (" in s and " loss " in s and " lr " in s and " eta " in s for s in steps)
    assert steps[-1].startswith(f"step {EPOCHS * 16}  samples {FINAL_SAMPLES}/{FINAL_SAMPLES} (100%)"), steps
    assert f"full log: {reference['ckpt']}/hpc_sft_local.log" in reference["out"]
    status = cli(env, "status", str(reference["ckpt"]))
    assert ": FINISHED" in status.stdout and f"hf_format/samples_{FINAL_SAMPLES}" in status.stdout, status.stdout
    logs = cli(env, "logs", str(reference["ckpt"]))
    assert logs.returncode == 0 and "torchrun exited with 0" in logs.stdout, logs.stderr


@pytest.mark.training
def test_ctrl_c_then_sigterm_save_say_where_and_the_rerun_ends_bit_identical(make_kwargs, env, reference, tmp_path):
    ckpt = tmp_path / "ckpt"
    recipe = write_recipe(tmp_path, make_kwargs(ckpt))
    # 1. Ctrl-C: SIGINT to the whole process group of `hpc-sft submit` (torchrun included) in epoch 0
    first = run_child([*CLI, "submit", str(recipe)], ckpt, env, after_steps(4), signal.SIGINT, group=True)
    assert first["sent"] and first["code"] == 130, first["err"][-3000:]
    meta = assert_saved_mid_epoch(ckpt, 0)
    state = ckpt / "full_state" / "epoch_0"
    assert f"interrupted by SIGINT: stopped at {meta['samples_seen']} of {FINAL_SAMPLES} samples; full state " \
           f"saved in {state}. Rerun the same command to resume" in first["err"]
    assert "Traceback" not in first["err"] + first["out"]
    status = cli(env, "status")  # the last run recorded: this one
    assert status.returncode == 0, status.stderr
    assert ": INTERRUPTED" in status.stdout and f"stopped by SIGINT: {state} at {meta['samples_seen']} samples" \
        in status.stdout, status.stdout
    assert json.loads(cli(env, "status", str(ckpt), "--json").stdout)["state"] == "INTERRUPTED"
    logs = cli(env, "logs")
    assert logs.returncode == 0 and "On-demand checkpoint" in logs.stdout, logs.stderr

    # 2. `hpc-sft cancel DIR`: SIGTERM to the process alone, inside epoch 1 of a run that resumed mid-epoch 0;
    # sft() raises
    code = [sys.executable, "-c", SFT_CHILD, json.dumps(make_kwargs(ckpt))]
    cancelled = []
    second = run_child(code, ckpt, env, lambda recs: sum(r["epoch"] == 1 for r in recs) >= 2,
                       send=lambda proc: cancelled.append((proc.pid, cli(env, "cancel", str(ckpt)))))
    assert second["sent"] and second["code"] == 3, second["err"][-3000:]
    pid, cancel = cancelled[0]
    assert cancel.returncode == 0 and "sent SIGTERM to local run local-" in cancel.stdout, cancel.stderr
    assert f"(pid {pid}); it saves a full state and stops" in cancel.stdout
    assert f"resuming from full_state/epoch_0 at {meta['samples_seen']} of {FINAL_SAMPLES} samples" in second["out"]
    meta = assert_saved_mid_epoch(ckpt, 1)
    assert f"HPC_SFT_TEST_INTERRUPTED SIGTERM 143 interrupted by SIGTERM: stopped at {meta['samples_seen']} of " \
           f"{FINAL_SAMPLES} samples; full state saved in {ckpt / 'full_state' / 'epoch_1'}" in second["out"]

    # 3. the same command again: resumes and ends where an uninterrupted run ends, bit for bit
    third = run_child([*CLI, "submit", str(recipe)], ckpt, env)
    assert third["code"] == 0, third["err"][-3000:]
    assert f"resuming from full_state/epoch_1 at {meta['samples_seen']} of {FINAL_SAMPLES} samples" in third["out"]
    assert f"({FINAL_SAMPLES} samples seen)" in third["out"]
    assert final_weights(ckpt) == reference["weights"]


@pytest.mark.training
def test_trl_backend_ctrl_c_saves_a_checkpoint_and_the_rerun_resumes(tiny_model, tiny_data, env, tmp_path):
    """The trl backend in one process: Ctrl-C is seen by its callback after the current step."""
    pytest.importorskip("trl", reason="trl is not installed")
    ckpt = tmp_path / "ckpt"
    kwargs = tiny_sft_kwargs(tiny_model, tiny_data, ckpt, backend="trl")
    kwargs.pop("data_process_num_cpu_procs", None)  # an instructlab-training field
    recipe = write_recipe(tmp_path, kwargs)
    first = run_child([*CLI, "submit", str(recipe)], ckpt, env, lambda recs: len(recs) >= 3, signal.SIGINT)
    assert first["sent"] and first["code"] == 130, first["err"][-3000:]
    saved = sorted(ckpt.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert saved and (saved[-1] / "hpc_sft_complete.json").is_file(), saved
    step = int(saved[-1].name.split("-")[1])
    assert 3 <= step < 16
    assert f"interrupted by SIGINT: stopped at {16 * step} of 256 samples; full state saved in {saved[-1]}" \
        in first["err"]
    second = run_child([*CLI, "submit", str(recipe)], ckpt, env)
    assert second["code"] == 0, second["err"][-3000:]
    assert f"resuming from checkpoint-{step} at {16 * step} of 256 samples" in second["out"]
    assert "(256 samples seen)" in second["out"]


# ---------------------------------------------------------------- no training


def test_progress_line_and_eta():
    from hpc_sft.console import eta_seconds, progress_line

    first = {"step": 1, "samples_seen": 16, "timestamp": "2026-01-01T00:00:00", "avg_loss": 6.0, "lr": 1e-3}
    last = {"step": 5, "samples_seen": 80, "timestamp": "2026-01-01T00:00:04", "avg_loss": 5.25, "lr": 9.5e-4}
    assert eta_seconds(first, last, 160) == 5.0  # 64 samples in 4 s, 80 to go
    assert progress_line(last, 160, 5.0) == "step 5  samples 80/160 (50%)  loss 5.2500  lr 9.50e-04  eta 0:00:05"
    trl_row = {"step": 2, "samples_seen": 32, "timestamp": "t", "loss": 1.5, "learning_rate": 1e-4}
    assert progress_line(trl_row, None, None) == "step 2  samples 32/?  loss 1.5000  lr 1.00e-04  eta ?"


def test_status_of_local_runs_without_torch_and_a_vanished_run_reads_died(tmp_path):
    """`status` of a local run (by id, by directory, the last one) stays light; a RUNNING record whose
    process is gone reads DIED."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "hpc_sft_local.log").write_text("backend output\n")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    code = (
        "import json, sys; from click.testing import CliRunner; from hpc_sft import jobs; from hpc_sft.cli import main\n"
        f"rec = jobs.record_local({str(ckpt)!r}, {str(ckpt / 'hpc_sft_local.log')!r})\n"
        f"jobs.update(rec, pid={int(gone.stdout)})\n"
        "runner = CliRunner()\n"
        "by_id = runner.invoke(main, ['status', rec['job_id']])\n"
        f"by_dir = runner.invoke(main, ['status', {str(ckpt)!r}, '--json'])\n"
        "last = runner.invoke(main, ['logs'])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'instructlab')]\n"
        "print(json.dumps({'by_id': by_id.output, 'by_dir': by_dir.output, 'logs': last.output, 'bad': bad}))\n")
    env = dict(os.environ, HPC_SFT_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["bad"] == []
    assert seen["by_id"].startswith("local run local-") and ": DIED" in seen["by_id"], seen["by_id"]
    assert f"logs: {ckpt / 'hpc_sft_local.log'}" in seen["by_id"]
    assert json.loads(seen["by_dir"])["state"] == "DIED"
    assert seen["logs"] == "backend output\n"


@pytest.mark.training
def test_a_failed_local_run_shows_the_end_of_its_log_and_records_failed(tiny_model, tiny_data, env, tmp_path):
    """Quiet output must not hide why training failed: here the workers cannot read the weights."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short: the torchrun worker fails to load it
    ckpt = tmp_path / "ckpt"
    recipe = write_recipe(tmp_path, tiny_sft_kwargs(model, tiny_data, ckpt))
    run = run_child([*CLI, "submit", str(recipe)], ckpt, env)
    assert run["code"] == 4, run["err"][-3000:]
    assert f"--- from {ckpt / 'hpc_sft_local.log'} ---" in run["err"]
    shown = run["err"].split("--- from", 1)[1]
    assert "SafetensorError: " in shown, shown  # the worker's own error, without opening the log
    assert len(shown.splitlines()) < 15
    status = cli(env, "status", str(ckpt))
    assert ": FAILED" in status.stdout, status.stdout
