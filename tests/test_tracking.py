"""sft(tracking=...): TensorBoard and offline W&B through each backend's own loggers, ONE run across resumes.

The real instructlab-training (in a child process, stopped by SIGUSR2 in its second epoch and run again) and the
real trl SFTTrainer (in this process, stopped after a checkpoint and a step that the resume trains again) log to
TensorBoard and to W&B offline; the event files and wandb's own transaction log are read back.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from hpc_sft import tracking
from hpc_sft._worker.hpc_sft_shim import tracking as shim_tracking
from hpc_sft.backends.instructlab.backend import InstructLabTrainingSFTBackend, map_args
from hpc_sft.backends.trl import mapping as trl_mapping
from hpc_sft.config.validate import build_config, split_values
from hpc_sft.errors import ConfigError
from hpc_sft.launch import Launch
from hpc_sft.rundir.layout import METRICS_FILE, TENSORBOARD_DIR, WANDB_DIR, WANDB_RUN_ID_FILE
from tests.helpers import tiny_sft_kwargs

CPU = Launch(nproc_per_node=1, device="cpu")
WANDB_VARS = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_DIR", "TENSORBOARD_LOGGING_DIR")


@pytest.fixture
def clean_wandb_env(monkeypatch, tmp_path):
    """The defaults a user gets (no WANDB_* set), and wandb's own files kept out of the home folder."""
    for name in WANDB_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))


def config(base_kwargs, **over):
    return build_config(*split_values({**base_kwargs, **over}))


# ---------------------------------------------------------------- the one parameter


@pytest.mark.parametrize("value, expected", [
    (None, ()), ("none", ()), ([], ()), ("tensorboard", ("tensorboard",)), (["wandb"], ("wandb",)),
    (["tensorboard", "wandb"], ("tensorboard", "wandb")), ("wandb,tensorboard", ("wandb", "tensorboard")),
    (("tensorboard", "tensorboard", "none"), ("tensorboard",)),
])
def test_tracking_values(base_kwargs, value, expected):
    assert tracking.trackers(config(base_kwargs, tracking=value).tracking) == expected


@pytest.mark.parametrize("value", ["tensorbord", ["tensorboard", "mlflow"], 3, ["wandb", 1], {"wandb": 1}])
def test_bad_tracking_values_name_the_key_and_the_choices(base_kwargs, value):
    with pytest.raises(ConfigError) as err:
        config(base_kwargs, tracking=value)
    assert err.value.key == "tracking"
    if isinstance(value, (str, list)):
        assert "none, tensorboard, wandb" in str(err.value)


def test_trl_report_to_and_tracking_are_one_choice(base_kwargs):
    over = dict(backend="trl", max_tokens_per_gpu=None)
    assert trl_mapping.map_args(config(base_kwargs, **over), CPU)["report_to"] == "none"
    tracked = config(base_kwargs, tracking=["tensorboard", "wandb"], **over)
    assert trl_mapping.map_args(tracked, CPU)["report_to"] == ["tensorboard", "wandb"]
    assert config(base_kwargs, report_to="tensorboard", **over).backend_kwargs["report_to"] == "tensorboard"
    with pytest.raises(ConfigError, match="report_to: is set and so is tracking"):
        config(base_kwargs, tracking="wandb", report_to="tensorboard", **over)


def test_ilt_tensorboard_folder_under_ckpt_output_dir(base_kwargs):
    plain = map_args(config(base_kwargs), CPU)[1]
    assert "tensorboard_log_dir" not in plain and "wandb_project" not in plain
    tracked = map_args(config(base_kwargs, tracking="tensorboard,wandb"), CPU)[1]
    assert tracked["tensorboard_log_dir"] == str(Path(base_kwargs["ckpt_output_dir"]) / TENSORBOARD_DIR)
    own = map_args(config(base_kwargs, tracking="tensorboard", tensorboard_log_dir="/tb"), CPU)[1]
    assert own["tensorboard_log_dir"] == "/tb"  # the backend field still wins


@pytest.mark.parametrize("backend", ["instructlab-training", "trl"])
@pytest.mark.parametrize("missing", ["wandb", "tensorboard"])
def test_a_missing_tracker_package_is_a_config_error_with_the_pip_command(base_kwargs, monkeypatch, backend,
                                                                          missing):
    from hpc_sft import registry

    over = {"backend": backend, "device": "cpu", "tracking": ["tensorboard", "wandb"]}
    if backend == "trl":
        over["max_tokens_per_gpu"] = None
    cfg = config(base_kwargs, **over)
    monkeypatch.setitem(sys.modules, missing, None)  # what importlib sees when the package is not installed
    with pytest.raises(ConfigError, match=rf"tracking: '{missing}' needs the {missing} package.*"
                                          r"pip install 'hpc-sft\[track\]'"):
        registry.backend_class(backend)().check_values(cfg)
    with pytest.raises(ConfigError, match="tracking:"):  # and where training runs, before it starts
        registry.backend_class(backend)().tracking_env(cfg)


def test_wandb_environment_is_offline_and_keeps_one_run_id(tmp_path, clean_wandb_env):
    ckpt = tmp_path / "ckpt"
    env = tracking.env(["wandb"], ckpt)
    assert env["WANDB_MODE"] == "offline" and env["WANDB_RESUME"] == "allow" and env["WANDB_DIR"] == str(ckpt)
    assert env["WANDB_PROJECT"] == "hpc-sft" and env[tracking.SHIM_ENV] == "1"
    assert (ckpt / WANDB_RUN_ID_FILE).read_text().strip() == env["WANDB_RUN_ID"]
    assert tracking.env("wandb", ckpt)["WANDB_RUN_ID"] == env["WANDB_RUN_ID"]  # every later start
    assert tracking.env("wandb", tmp_path / "other")["WANDB_RUN_ID"] != env["WANDB_RUN_ID"]
    users = {"WANDB_MODE": "online", "WANDB_PROJECT": "mine", "WANDB_RUN_ID": "abc"}
    assert not set(users) & set(tracking.env("wandb", ckpt, environ=users))  # the user's settings win
    assert tracking.env("tensorboard", tmp_path / "tb") == {tracking.SHIM_ENV: "1"}
    assert not (tmp_path / "tb").exists() and tracking.env(None, ckpt) == {}


class Record:
    def __init__(self, msg, step):
        self.msg, self.step = msg, step


@pytest.mark.parametrize("epoch, step, per_epoch, expected", [
    (0, 1, 8, 1), (0, 8, 8, 8), (1, 9, 8, 9), (1, 16, 8, 16),  # a process that started in epoch 0
    (1, 3, 8, 11), (1, 8, 8, 16), (2, 9, 8, 17),  # resumed into epoch 1 after 2 batches of it (skips counted)
    (3, 1, 4, 13),  # resumed at the start of epoch 3
])
def test_instructlab_steps_become_steps_of_the_whole_run(epoch, step, per_epoch, expected):
    shim_tracking._offset["steps"] = None
    msg = {"epoch": epoch, "step": step, "num_epoch_steps": per_epoch, "avg_loss": 1.0}
    new = shim_tracking.run_step(Record(msg, step))
    assert new.step == expected and new.msg["step"] == expected and msg["step"] == step  # original untouched
    assert shim_tracking.run_step(Record({"val_loss": 2.0}, step)).step == expected  # no epoch: same offset


# ---------------------------------------------------------------- what the loggers wrote


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar as TensorBoard shows the run in `folder`: its event files read in order, a
    writer's start (SessionLog.START at purge_step S) hides the steps >= S written before it. Raw events:
    steps written twice stay twice (TensorBoard's EventAccumulator would hide steps that go back)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    points: list[tuple[int, float]] = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                points = [(step, value) for step, value in points if step < event.step]
            points += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return points


def wandb_records(path: Path) -> list:
    """The records of one wandb transaction log (run-ID.wandb: a 7-byte header, then LevelDB log blocks of
    32 KiB whose records carry a protobuf wandb Record)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, out, buf = path.read_bytes(), 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768  # block trailer
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def wandb_runs(ckpt: Path) -> list[dict]:
    """One entry per start: its offline folder, the run id it logged to, and its history rows."""
    runs = []
    for folder in sorted((ckpt / WANDB_DIR).glob("offline-run-*")):
        (log,) = folder.glob("run-*.wandb")
        records = wandb_records(log)
        run_ids = {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"}
        rows = [{(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
                for r in records if r.WhichOneof("record_type") == "history"]
        runs.append({"folder": folder, "run_ids": run_ids, "rows": rows})
    return runs


def assert_one_wandb_run(ckpt: Path, starts: int, wait_s: float = 60) -> list[dict]:
    """Every start logged to the one run id. wandb's service writes its offline log on its own: on a busy
    machine the last start's records can land a little after training returned, so they are waited for."""
    import time

    run_id = (ckpt / WANDB_RUN_ID_FILE).read_text().strip()
    deadline = time.monotonic() + wait_s
    runs = wandb_runs(ckpt)
    while any(r["run_ids"] != {run_id} for r in runs) and time.monotonic() < deadline:
        time.sleep(1)
        runs = wandb_runs(ckpt)
    assert len(runs) == starts, [r["folder"] for r in runs]
    for run in runs:
        assert run["folder"].name.endswith(f"-{run_id}") and run["run_ids"] == {run_id}
    return runs


# ---------------------------------------------------------------- real training


@pytest.mark.training
def test_instructlab_training_continues_one_tensorboard_run_and_one_wandb_run(tiny_model, small_data, tmp_path,
                                                                            clean_wandb_env):
    pytest.importorskip("instructlab.training", reason="instructlab-training is not installed")
    from tests.resume_helpers import Run

    ckpt = tmp_path / "ckpt"
    # 64 samples, batch 16: 4 steps per epoch, 2 epochs; stopped in the second epoch of the first process,
    # so that the resumed process starts counting again inside epoch 1
    kwargs = tiny_sft_kwargs(tiny_model, small_data, ckpt, num_epochs=2, on_demand_checkpointing=True,
                             tracking=["tensorboard", "wandb"])
    first = Run(kwargs)(lambda records: any(r["epoch"] == 1 and r["step"] >= 6 for r in records))
    assert first["sent"] and first["saved"]["current_epoch"] == 1
    second = Run(kwargs)()
    assert second["records"][0]["epoch"] == 1 and second["records"][0]["step"] < 5  # instructlab-training's count

    folder = ckpt / TENSORBOARD_DIR
    assert [p.name for p in folder.iterdir() if p.is_dir()] == []  # no run folder per start
    assert len(list(folder.glob("events.out.tfevents.*"))) >= 2  # two starts wrote into the same run
    losses = scalars(folder, "avg_loss")
    assert [step for step, _ in losses] == list(range(1, 9))
    logged = [r["avg_loss"] for r in first["records"] + second["records"]]
    assert [value for _, value in losses] == pytest.approx(logged, rel=1e-6)
    assert [value for _, value in scalars(folder, "samples_seen")] == [16 * n for n in range(1, 9)]

    runs = assert_one_wandb_run(ckpt, starts=2)
    steps = [[row["_step"] for row in run["rows"] if "avg_loss" in row] for run in runs]
    assert steps[0] == list(range(1, len(first["records"]) + 1)) and steps[0] + steps[1] == list(range(1, 9))


def stop_without_saving_after(k):
    """A TrainerCallback ending training after optimizer step k without a save, as a crash after the save of
    an earlier checkpoint would: the resume trains the steps after that checkpoint again."""
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == k:
                control.should_training_stop = True

    return Stop()


@pytest.mark.training
def test_trl_continues_one_tensorboard_run_and_one_wandb_run(tiny_model, small_data, tmp_path, one_thread,
                                                              clean_wandb_env):
    pytest.importorskip("trl", reason="trl is not installed")
    from hpc_sft.backends.trl import backend as tb
    from tests.trl_helpers import cpu, run_kwargs, trl_config

    ckpt = tmp_path / "ckpt"
    # 64 samples, batch 8: 8 steps per epoch, 2 epochs; checkpoint-N every 2 steps; stopped at step 11
    cfg = trl_config({"seed": 4}, **run_kwargs(tiny_model, small_data, ckpt, num_epochs=2, effective_batch_size=8,
                                               save_samples=16, tracking=["tensorboard", "wandb"]))
    tb.TRLSFTBackend().check_values(cfg)
    tb.TRLSFTBackend(callbacks=[stop_without_saving_after(11)]).execute_training(cfg, cpu())
    assert (ckpt / "checkpoint-10").is_dir() and not (ckpt / "checkpoint-11").exists()
    tb.TRLSFTBackend().execute_training(cfg, cpu())  # resumes from checkpoint-10: step 11 is trained again

    rows = [json.loads(line) for line in (ckpt / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [*range(1, 12), *range(11, 17)]
    final_11 = [r["loss"] for r in rows if r.get("step") == 11 and "loss" in r][-1]
    folder = ckpt / TENSORBOARD_DIR
    assert [p.name for p in folder.iterdir() if p.is_dir()] == []
    losses = scalars(folder, "train/loss")
    assert [step for step, _ in losses] == list(range(1, 17))  # once each: the repeated step 11 replaced
    assert dict(losses)[11] == pytest.approx(final_11, rel=1e-6)

    runs = assert_one_wandb_run(ckpt, starts=2)
    steps = [[row["train/global_step"] for row in run["rows"] if "train/loss" in row] for run in runs]
    assert steps == [list(range(1, 12)), list(range(11, 17))]
    assert "WANDB_RUN_ID" not in os.environ  # a run in this process leaves its environment as it was
