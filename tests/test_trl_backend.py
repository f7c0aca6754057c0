"""The trl backend: static field list, pure mapping against the real trl.SFTConfig, checks, real CPU runs."""
from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_sft.backends.trl import backend as tb
from hpc_sft.backends.trl import checkpoints as tc
from hpc_sft.backends.trl import launch as tl
from hpc_sft.backends.trl import mapping as tm
from hpc_sft.backends.trl import train as tt
from hpc_sft.config.validate import build_config, split_values
from hpc_sft.errors import ConfigError
from hpc_sft.launch import Launch
from hpc_sft.rundir.layout import METRICS_FILE, result_from_disk

from .conftest import tiny_sft_kwargs
from .loading import assert_loads_as_trained, newest_trl_checkpoint

real_trl = pytest.importorskip("trl", reason="trl is not installed")

ILT_ONLY = ("max_tokens_per_gpu",)


def trl_config(backend_kwargs=None, **kw):
    """A validated SFTConfig for backend='trl'."""
    return build_config(*split_values({**kw, "backend": "trl", **dict(backend_kwargs or {})}))


def cpu(nproc=1, nnodes=1):
    return Launch(nproc_per_node=nproc, nnodes=nnodes, device="cpu")


# ---------------------------------------------------------------- static facts

def test_static_field_list_matches_the_real_class():
    real = {f.name for f in dataclasses.fields(real_trl.SFTConfig) if f.init}
    assert tm.SFTCONFIG_FIELDS == real
    assert set(tm.ALIASES) <= real and tm.SAME_NAME <= real


def test_import_does_not_load_heavy_libraries():
    code = ("import sys, hpc_sft.backends.trl.backend; "
            "print([m for m in ('trl', 'transformers', 'datasets', 'torch', 'peft') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- mapping against the real SFTConfig

def test_mapping_against_real_sftconfig(base_kwargs):
    base_kwargs.pop("max_tokens_per_gpu")
    config = trl_config({"seed": 7, "lr_scheduler_type": "constant", "packing": True}, **{
        **base_kwargs, "effective_batch_size": 16, "num_epochs": 3, "save_samples": 50, "warmup_steps": 2})
    args = real_trl.SFTConfig(**tm.map_args(config, cpu()))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (16, 1)
    assert (args.num_train_epochs, args.learning_rate, args.warmup_steps, args.max_length) == (3, 1e-4, 2, 128)
    assert args.output_dir == base_kwargs["ckpt_output_dir"]
    assert args.save_strategy == "steps" and args.save_steps == 4  # ceil(50 / 16)
    assert args.use_cpu is True and args.report_to in ([], "none", ["none"])
    assert args.logging_strategy == "steps" and args.logging_steps == 1
    assert (args.seed, args.lr_scheduler_type, args.packing) == (7, "constant", True)


@pytest.mark.parametrize("nproc,nnodes,max_tokens,expect", [
    (2, 1, None, (8, 1)),      # world 2: 8 per device, no accumulation
    (1, 2, None, (8, 1)),      # world 2 across nodes
    (2, 1, 256, (2, 4)),       # 256 tokens / 128 max_seq_len -> at most 2 per device: 2 x 4 x 2 = 16
    (2, 2, 384, (2, 2)),       # cap 3 -> largest divisor of 4 not above 3 is 2
    (1, 1, 10, (1, 16)),       # budget below one sample: 1 per device
])
def test_effective_batch_arithmetic_with_world_size(base_kwargs, nproc, nnodes, max_tokens, expect):
    config = dataclasses.replace(trl_config(**{**base_kwargs, "effective_batch_size": 16}),
                                 max_tokens_per_gpu=max_tokens)
    args = real_trl.SFTConfig(**tm.map_args(config, cpu(nproc, nnodes)))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == expect
    assert expect[0] * expect[1] * nproc * nnodes == 16


def test_save_per_epoch_and_no_cpu_flag_on_cuda(base_kwargs):
    config = trl_config(**base_kwargs, save_samples=0)
    kw = tm.map_args(config, Launch(nproc_per_node=1, device="cuda"))
    assert kw["save_strategy"] == "epoch" and "save_steps" not in kw and "use_cpu" not in kw


def test_impossible_effective_batch_is_a_clear_error(base_kwargs):
    config = trl_config(**{**base_kwargs, "effective_batch_size": 6})
    with pytest.raises(ConfigError) as err:
        tm.map_args(config, cpu(2, 2))
    assert err.value.key == "effective_batch_size" and "divisible by the 4" in str(err.value)


def test_lora_maps_to_a_real_lora_config(base_kwargs):
    from peft import LoraConfig

    config = trl_config({"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_target_modules": ["q_proj"]},
                        **base_kwargs)
    lora = LoraConfig(**tm.lora_args(config))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, set(lora.target_modules)) == (4, 8, 0.0, {"q_proj"})
    assert "lora_r" not in tm.map_args(config, cpu())
    assert tm.lora_args(trl_config(**base_kwargs)) is None


# ---------------------------------------------------------------- kwarg and value checks

def test_unknown_kwarg_lists_fields_with_did_you_mean():
    with pytest.raises(ConfigError) as err:
        tb.TRLSFTBackend.check_kwargs({"packin": True})
    text = str(err.value)
    assert "did you mean 'packing'" in text and "lora_r" in text and "assistant_only_loss" in text
    with pytest.raises(ConfigError, match="lora_r"):
        tb.TRLSFTBackend.check_kwargs({"lora_rank": 4})


def test_fields_set_through_sft_are_refused_with_the_parameter_to_use():
    with pytest.raises(ConfigError, match="num_epochs"):
        tb.TRLSFTBackend.check_kwargs({"num_train_epochs": 2})
    with pytest.raises(ConfigError, match="max_seq_len"):
        tb.TRLSFTBackend.check_kwargs({"max_length": 2})
    for field in ("output_dir", "per_device_train_batch_size", "save_steps", "use_cpu"):
        with pytest.raises(ConfigError):
            tb.TRLSFTBackend.check_kwargs({field: 1})


def test_check_values_names_the_rejected_kwarg(base_kwargs):
    with pytest.raises(ConfigError) as err:
        tb.TRLSFTBackend().check_values(trl_config({"lr_scheduler_type": "bogus"}, **base_kwargs))
    assert err.value.key == "lr_scheduler_type" and "trl.SFTConfig" in str(err.value)
    tb.TRLSFTBackend().check_values(trl_config({"optim": "adamw_torch", "packing": False}, **base_kwargs))


def test_check_values_checks_batch_against_slurm_nodes(base_kwargs):
    from types import SimpleNamespace

    config = dataclasses.replace(trl_config(**{**base_kwargs, "effective_batch_size": 6}),
                                 slurm=SimpleNamespace(nodes=4))
    with pytest.raises(ConfigError, match="divisible by the 4"):
        tb.TRLSFTBackend().check_values(config)


def test_check_values_refuses_pretraining(base_kwargs):
    config = dataclasses.replace(trl_config(**base_kwargs), is_pretraining=True, block_size=64)
    with pytest.raises(ConfigError, match="is_pretraining"):
        tb.TRLSFTBackend().check_values(config)


@pytest.mark.parametrize("lora,key", [
    ({"lora_r": 0}, "lora_r"), ({"lora_r": 4, "lora_dropout": "x"}, "lora_dropout"),
    ({"lora_r": 4, "lora_alpha": -1}, "lora_alpha"), ({"lora_r": 4, "lora_target_modules": 5}, "lora_target_modules"),
    ({"lora_alpha": 16}, "lora_alpha"),
])
def test_check_values_rejects_bad_lora(base_kwargs, lora, key):
    with pytest.raises(ConfigError) as err:
        tb.TRLSFTBackend().check_values(trl_config(lora, **base_kwargs))
    assert err.value.key == key


# ---------------------------------------------------------------- checkpoints

def fake_checkpoint(root: Path, step: int, state=None) -> Path:
    """A checkpoint-N as the trl backend leaves it after a finished save (marker included)."""
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps(state or {"global_step": step}))
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state_1.pth"):
        (path / name).write_text("x" * 10)
    tc.mark_complete(path, step)
    return path


def test_latest_complete_checkpoint_skips_torn_ones(tmp_path):
    fake_checkpoint(tmp_path, 2)
    good = fake_checkpoint(tmp_path, 10)
    (fake_checkpoint(tmp_path, 12) / "rng_state_1.pth").unlink()  # another rank's file is gone
    (fake_checkpoint(tmp_path, 14) / "optimizer.pt").write_text("x")  # truncated
    tc.drop_marker(fake_checkpoint(tmp_path, 16))  # the save never finished
    (tmp_path / "checkpoint-18.tmp").mkdir()
    said = []
    assert tc.latest_complete_checkpoint(tmp_path, said.append) == good
    assert len(said) == 3, said
    assert "checkpoint-16" in said[0] and "no hpc_sft_complete.json" in said[0]
    assert "checkpoint-14" in said[1] and "optimizer.pt has 1 bytes, expected 10" in said[1]
    assert "checkpoint-12" in said[2] and "missing rng_state_1.pth" in said[2]
    assert tc.latest_complete_checkpoint(tmp_path / "absent") is None


def test_a_checkpoint_without_optimizer_state_is_not_resumable(tmp_path):
    path = fake_checkpoint(tmp_path, 4)
    (path / "optimizer.pt").unlink()
    tc.mark_complete(path, 4)  # e.g. save_only_model: complete, but no optimizer to resume
    assert tc.checkpoint_problem(path) == "missing optimizer.pt"


def callback_env(tmp_path, base_kwargs, step=3):
    from types import SimpleNamespace

    config = trl_config({}, **{**base_kwargs, "ckpt_output_dir": str(tmp_path)})
    args = SimpleNamespace(device="cpu", output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=step, is_world_process_zero=True, max_steps=16, epoch=0.5)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    return tt.hpc_sft_callback(config), args, state, control


def test_callback_saves_and_stops_on_a_signal_in_this_process(tmp_path, base_kwargs, monkeypatch):
    import signal
    from types import SimpleNamespace

    from hpc_sft import signals

    monkeypatch.setattr(signals, "_current", None)
    callback, args, state, control = callback_env(tmp_path, base_kwargs)
    callback.on_step_end(args, state, control)
    assert not control.should_save and not control.should_training_stop
    monkeypatch.setattr(signals, "_current", SimpleNamespace(received=signal.SIGUSR2.name))
    callback.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop
    callback.on_epoch_end(args, state, control)  # the epoch-end save would write the same step again
    assert not control.should_save


def test_callback_stops_on_the_parents_stop_file(tmp_path, base_kwargs, monkeypatch):
    from hpc_sft import signals

    monkeypatch.setattr(signals, "_current", None)
    stop = tmp_path / "stop"
    monkeypatch.setenv(tt.STOP_FILE_ENV, str(stop))
    callback, args, state, control = callback_env(tmp_path, base_kwargs)
    callback.on_step_end(args, state, control)
    assert not control.should_training_stop
    stop.write_text("SIGUSR2")
    callback.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop


def test_callback_marks_a_checkpoint_complete_only_after_its_save(tmp_path, base_kwargs):
    callback, args, state, control = callback_env(tmp_path, base_kwargs, step=5)
    path = fake_checkpoint(tmp_path, 5)
    control.should_save = True
    callback.on_step_end(args, state, control)  # a save of step 5 starts: the old marker goes first
    assert tc.checkpoint_problem(path) == "no hpc_sft_complete.json: the save did not finish"
    callback.on_save(args, state, control)
    assert tc.checkpoint_problem(path) is None


def test_status_shows_the_newest_checkpoint_before_the_final_model(tmp_path):
    from hpc_sft.progress import run_status

    assert run_status(tmp_path)["last_checkpoint"] is None
    fake_checkpoint(tmp_path, 6)
    newest = fake_checkpoint(tmp_path, 12)
    assert run_status(tmp_path)["last_checkpoint"] == str(newest)


def test_progress_facts_for_the_requeue_decision(tmp_path):
    from hpc_sft.requeue import StateFacts, decide

    assert tc.progress(tmp_path, 8, 2) == (None, None)
    fake_checkpoint(tmp_path, 6, {"global_step": 6, "max_steps": 16, "epoch": 0.75})
    assert tc.progress(tmp_path, 8, 2)[0] == StateFacts(0, 48, 6)
    last = fake_checkpoint(tmp_path, 16, {"global_step": 16, "max_steps": 16, "epoch": 2.0})
    facts, path = tc.progress(tmp_path, 8, 2)
    assert facts == StateFacts(2, 128, 16) and path == last  # last step saved, final model not yet written
    assert decide(facts, 2, 0, 3, [], "x").action == "requeue"
    final = tmp_path / "hf_format" / "samples_128"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    facts, _ = tc.progress(tmp_path, 8, 2)
    assert facts == StateFacts(1, 128, None) and decide(facts, 2, 0, 3, [], "x").action == "finish"


def test_torchrun_command_shapes(tmp_path):
    cmd = tl.torchrun_command(Launch(nproc_per_node=2, nnodes=2, node_rank=1, rdzv_id=5,
                                     rdzv_endpoint="n1:29500"), tmp_path / "a.json")
    assert cmd[0] == "torchrun" and "--rdzv-endpoint=n1:29500" in cmd and "--node-rank=1" in cmd
    assert cmd[-2:] == [str(tl.WORKER), str(tmp_path / "a.json")]
    assert "--standalone" in tl.torchrun_command(Launch(nproc_per_node=2), tmp_path / "a.json")


def test_launch_file_round_trip(base_kwargs):
    config = trl_config({"seed": 3}, **base_kwargs)
    launch = Launch(nproc_per_node=2, device="cpu", env=(("A", "1"),))
    back_config, back_launch = tl.read_launch_file(tl.launch_file(config, launch))
    assert back_launch == launch
    assert dataclasses.replace(back_config, slurm=config.slurm) == config


# ---------------------------------------------------------------- real CPU training

@pytest.fixture
def one_thread():
    """This 2-core machine runs the tiny model ~10x faster single-threaded (oversubscription otherwise)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_data(tiny_data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny-64.jsonl"
    path.write_text("".join(Path(tiny_data).read_text().splitlines(keepends=True)[:64]))
    return path


def run_kwargs(model, data, ckpt, **over):
    kw = {k: v for k, v in tiny_sft_kwargs(model, data, ckpt, **over).items() if k not in ILT_ONLY}
    return kw


def weights(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    result = result_from_disk(ckpt)
    return load_file(result.checkpoint_path / "model.safetensors")


def losses(ckpt: Path) -> list[float]:
    rows = [json.loads(line) for line in (ckpt / METRICS_FILE).read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.mark.training
def test_real_cpu_run_writes_hf_format_and_learns(tiny_model, tiny_data, tmp_path, one_thread):
    ckpt = tmp_path / "ckpt"
    config = trl_config({"seed": 1}, **run_kwargs(tiny_model, tiny_data, ckpt))
    backend = tb.TRLSFTBackend()
    backend.check_values(config)
    backend.execute_training(config, cpu())
    result = result_from_disk(ckpt)
    assert result.samples_seen == 256 and result.checkpoint_path == ckpt / "hf_format" / "samples_256"
    assert (result.checkpoint_path / "config.json").is_file()
    assert (result.checkpoint_path / "tokenizer_config.json").is_file()
    assert result.metrics_file == ckpt / METRICS_FILE
    seen = losses(ckpt)
    assert len(seen) == 16 and seen[-1] < seen[0]
    assert_loads_as_trained(result.checkpoint_path, newest_trl_checkpoint(ckpt), tiny_model)


def stop_after(k):
    """A TrainerCallback that saves and stops after optimizer step k, as a kill after that save would."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == k:
                control.should_save = True
                control.should_training_stop = True

    return StopAfter()


@pytest.mark.training
def test_resume_skips_torn_checkpoint_and_is_bit_identical(tiny_model, small_data, tmp_path, one_thread, caplog):
    # 64 samples, batch 8 -> 8 steps per epoch, 2 epochs; a checkpoint every 16 samples (2 steps)
    over = dict(num_epochs=2, effective_batch_size=8, save_samples=16)
    a = tmp_path / "a"
    config_a = trl_config({"seed": 5}, **run_kwargs(tiny_model, small_data, a, **over))
    tb.TRLSFTBackend().execute_training(config_a, cpu())

    b = tmp_path / "b"
    config_b = trl_config({"seed": 5}, **run_kwargs(tiny_model, small_data, b, **over))
    tb.TRLSFTBackend(callbacks=[stop_after(11)]).execute_training(config_b, cpu())  # mid-epoch 2
    assert result_from_disk(b).samples_seen is None  # stopped early: no final model
    assert {p.name for p in b.glob("checkpoint-*")} >= {"checkpoint-8", "checkpoint-10", "checkpoint-11"}
    (b / "checkpoint-11" / "optimizer.pt").unlink()  # torn: the resume must fall back to checkpoint-10
    with caplog.at_level(logging.WARNING, logger="hpc_sft.trl"):
        tb.TRLSFTBackend().execute_training(config_b, cpu())
    assert "checkpoint-11 is torn (missing optimizer.pt)" in caplog.text
    assert f"resuming from {b / 'checkpoint-10'}" in caplog.text
    rows = [json.loads(line) for line in (b / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [*range(1, 12), *range(11, 17)]  # not from scratch

    assert result_from_disk(a).samples_seen == result_from_disk(b).samples_seen == 128
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert wa[name].equal(wb[name]), name


@pytest.mark.training
def test_two_processes_on_cpu_match_one(tiny_model, small_data, tmp_path, one_thread):
    """torchrun + gloo DDP: gradients are synchronised (a rank training alone would drift far more)."""
    import torch

    over = dict(num_epochs=1, effective_batch_size=8)
    runs = {}
    for nproc in (1, 2):
        ckpt = tmp_path / f"n{nproc}"
        config = trl_config({"seed": 2}, **run_kwargs(tiny_model, small_data, ckpt, **over))
        # 4 per device in both (1 process: 4 x 2 accumulation; 2 processes: 4 x 1 each): same micro-batches
        config = dataclasses.replace(config, max_tokens_per_gpu=4 * config.max_seq_len)
        tb.TRLSFTBackend().execute_training(config, cpu(nproc))
        assert result_from_disk(ckpt).samples_seen == 64
        runs[nproc] = weights(ckpt)
    assert (tmp_path / "n2" / "full_logs_global0.log").is_file()
    for name, value in runs[1].items():
        assert torch.allclose(value, runs[2][name], rtol=0, atol=1e-6), name


@pytest.mark.training
@pytest.mark.parametrize("nproc", [1, 2])
def test_lora_run_saves_a_merged_loadable_model(tiny_model, small_data, tmp_path, one_thread, nproc):
    ckpt = tmp_path / "lora"
    config = trl_config({"lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"]},
                        **run_kwargs(tiny_model, small_data, ckpt, effective_batch_size=8))
    tb.TRLSFTBackend().check_values(config)
    tb.TRLSFTBackend().execute_training(config, cpu(nproc))
    trained = weights(ckpt)
    assert result_from_disk(ckpt).samples_seen == 64
    assert not any("lora" in name for name in trained)  # merged into the base weights
    from safetensors.torch import load_file

    base = load_file(Path(tiny_model) / "model.safetensors")
    changed = {name for name in trained if not trained[name].equal(base[name])}
    assert changed and all(("q_proj" in n or "v_proj" in n) for n in changed)


def samples_logged(ckpt: Path) -> int:
    path = ckpt / METRICS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return max([row.get("samples_seen", 0) for row in rows] or [0])


def start_node_child(config, tmp_path, env=None) -> subprocess.Popen:
    """The training parent of one node with 2 CPU workers, in its own process group (as a Slurm step)."""
    import os

    launch_json = tl.launch_file(config, cpu(2))
    with open(tmp_path / "child.log", "w") as out:
        return subprocess.Popen([sys.executable, str(Path(__file__).parent / "trl_node_child.py"), str(launch_json)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})


def wait_for(predicate, child, tmp_path, timeout_s=300):
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert child.poll() is None and time.monotonic() < deadline, (tmp_path / "child.log").read_text()
        time.sleep(0.1)


def reference_run(tiny_model, tiny_data, tmp_path, **over) -> Path:
    ref = tmp_path / "ref"
    tb.TRLSFTBackend().execute_training(trl_config({"seed": 7}, **run_kwargs(tiny_model, tiny_data, ref, **over)),
                                        cpu(2))
    return ref


@pytest.mark.training
def test_signal_to_the_whole_process_group_saves_and_resumes_bit_identical(tiny_model, tiny_data, tmp_path,
                                                                            one_thread):
    """As Slurm signals every process of a step: torchrun and the workers must survive USR2, the parent
    turns it into a stop file, both ranks save the same step, and the rerun ends bit-identical."""
    import os
    import signal

    over = dict(num_epochs=2, effective_batch_size=8)
    ref = reference_run(tiny_model, tiny_data, tmp_path, **over)
    ckpt = tmp_path / "ckpt"
    config = trl_config({"seed": 7}, **run_kwargs(tiny_model, tiny_data, ckpt, **over))
    child = start_node_child(config, tmp_path)
    wait_for(lambda: samples_logged(ckpt) >= 80, child, tmp_path)
    os.killpg(child.pid, signal.SIGUSR2)
    assert child.wait(timeout=300) == 0, (tmp_path / "child.log").read_text()
    assert "hpc-sft child: signal SIGUSR2" in (tmp_path / "child.log").read_text()
    state, path = tb.TRLSFTBackend().progress(config)
    assert 80 <= state.samples_seen < 512 and state.global_step == state.samples_seen // 8, state
    assert sorted(p.name for p in path.glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert result_from_disk(ckpt).checkpoint_path is None  # interrupted: no final model yet
    assert not list(ckpt.glob(".hpc_sft_stop.*"))

    tb.TRLSFTBackend().execute_training(config, cpu(2))  # the rerun resumes from that checkpoint
    assert tb.TRLSFTBackend().progress(config)[0].global_step is None  # finished
    assert result_from_disk(ckpt).samples_seen == result_from_disk(ref).samples_seen == 512
    wa, wb = weights(ref), weights(ckpt)
    assert wa.keys() == wb.keys() and all(wa[name].equal(wb[name]) for name in wa)


@pytest.mark.training
def test_kill_during_the_signal_save_resumes_from_the_previous_complete_checkpoint(tiny_model, tiny_data, tmp_path,
                                                                                   one_thread):
    """SIGKILL (Slurm's end of grace) lands while the save a warning asked for is still being written."""
    import os
    import signal

    over = dict(num_epochs=2, effective_batch_size=8, save_samples=32)  # a checkpoint every 4 steps
    ref = reference_run(tiny_model, tiny_data, tmp_path, **over)
    ckpt = tmp_path / "ckpt"
    config = trl_config({"seed": 7}, **run_kwargs(tiny_model, tiny_data, ckpt, **over))
    child = start_node_child(config, tmp_path, {"HPC_SFT_FAULT_PAUSE_STOP_SAVE_S": "120"})
    wait_for(lambda: samples_logged(ckpt) >= 120, child, tmp_path)
    os.killpg(child.pid, signal.SIGUSR2)

    def torn():
        return [p for _, p in tc.checkpoints(ckpt) if (p / "trainer_state.json").is_file()
                and not (p / tc.MARKER).is_file()]

    wait_for(lambda: torn(), child, tmp_path)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    torn_step = int(torn()[0].name.split("-")[1])
    optimizer = torn()[0] / "optimizer.pt"  # the pause held the save open after its files; leave what a kill
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])  # inside torch.save leaves
    state, path = tb.TRLSFTBackend().progress(config)
    assert state.global_step < torn_step and state.global_step % 4 == 0, (state, torn_step)

    tb.TRLSFTBackend().execute_training(config, cpu(2))  # the rerun (its workers log to full_logs_global0)
    rerun_log = (ckpt / "full_logs_global0.log").read_text()
    assert f"checkpoint-{torn_step} is torn (no hpc_sft_complete.json" in rerun_log
    assert f"resuming from {path}" in rerun_log
    assert result_from_disk(ckpt).samples_seen == 512
    wa, wb = weights(ref), weights(ckpt)
    assert all(wa[name].equal(wb[name]) for name in wa)
    assert not list(ckpt.glob(".hpc_sft_stop.*"))
