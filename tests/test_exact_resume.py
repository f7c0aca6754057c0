"""Exact resume after on-demand checkpoints (SIGUSR2), atomic full-state publishing, signal shielding.

The real instructlab-training runs on CPU in a subprocess (sft(executor='local')), so the test can send
SIGUSR2 to that process alone, or to its whole process group as Slurm does, at points it picks by
watching the metrics file.  An interrupted-and-resumed run must end bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_sft._worker.hpc_sft_shim import resume as shim
from tests.helpers import tiny_sft_kwargs
from tests.resume_helpers import (EPOCHS, FINAL_SAMPLES, STEPS_PER_EPOCH, WORKER_DIR, Run, differences,
                                  final_weights, interrupted_sequence, keyed, newest_metadata, start_of)

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def train_kwargs(tiny_model, tiny_data):
    def make(ckpt: Path) -> dict:
        kw = tiny_sft_kwargs(tiny_model, tiny_data, ckpt, on_demand_checkpointing=True)
        kw["num_epochs"] = EPOCHS
        return kw

    return make


@pytest.fixture(scope="module")
def uninterrupted(train_kwargs, tmp_path_factory):
    pytest.importorskip("instructlab.training", reason="instructlab-training is not installed")
    ckpt = tmp_path_factory.mktemp("uninterrupted") / "ckpt"
    run = Run(train_kwargs(ckpt))()
    assert len(run["records"]) == EPOCHS * STEPS_PER_EPOCH
    return {"ckpt": ckpt, "run": run, "steps": keyed(run), "weights": final_weights(ckpt)}


# ---------------------------------------------------------------- real training


@pytest.mark.training
def test_three_interruptions_resume_bit_identical(train_kwargs, uninterrupted, tmp_path):
    ckpt = tmp_path / "ckpt"

    def plant_crash_leftovers(number: int, ckpt: Path) -> None:
        staging = ckpt / shim.STAGING_DIR
        if number == 1:
            # A crash between the two renames of a publish: the new state is staged and complete, the old
            # one was moved aside (here: junk that must never be loaded), full_state/epoch_0 is missing.
            (staging / "full_state").mkdir(parents=True)
            os.rename(ckpt / "full_state" / "epoch_0", staging / "full_state" / "epoch_0")
            (staging / "replaced" / "epoch_0").mkdir(parents=True)
            (staging / "replaced" / "epoch_0" / "optimizer.bin").write_bytes(b"junk")
        if number == 2:
            # A save torn mid-write (no marker) with a larger epoch number than any real state.
            torn = staging / "full_state" / "epoch_9"
            torn.mkdir(parents=True)
            (torn / "model.safetensors").write_bytes(b"\0" * 100)

    # the planted leftovers hide the real state from Run's look-up: read what each run resumed from
    # from the previous run's save instead
    runs = interrupted_sequence(train_kwargs(ckpt), exact=True, before_run=plant_crash_leftovers)
    for previous, run in zip(runs, runs[1:]):
        run["start"] = start_of(previous["saved"])
        run["first_epoch"] = run["start"][0]

    for run in runs:
        print(f"run from {run['start']}: {len(run['records'])} steps logged, saved {run['saved']}")
    assert [run["sent"] for run in runs] == [True, True, True, False]
    for run in runs[:3]:
        assert "On-demand checkpoint saved" in run["log"]
    saved = [run["saved"] for run in runs]
    # where each interrupted run stopped: the epoch it saved in, and batches of that epoch fully done;
    # instructlab-training's own samples_seen (16 per batch) must agree with the saved step count
    assert [meta["current_epoch"] for meta in saved] == [0, 1, 1, 1]
    for meta in saved[:3]:
        assert meta["global_step"] is not None and 0 <= meta["global_step"] < STEPS_PER_EPOCH
        assert meta["samples_seen"] == 256 * meta["current_epoch"] + 16 * meta["global_step"]
    assert saved[3] == {"current_epoch": 1, "global_step": None, "samples_seen": FINAL_SAMPLES}
    assert runs[1]["first_epoch"] == 0  # so its interruption was in the 2nd epoch of that process
    assert runs[2]["first_epoch"] == 1 and runs[2]["start"][1] > 1  # resumed mid-epoch 1
    # each resumed run trained on from exactly the batch after the last one whose step was done
    for run in runs:
        assert min(keyed(run)) == run["start"]
    # crash leftovers were repaired, never loaded, never published
    assert "published the complete staged state epoch_0" in runs[1]["log"]
    assert "deleted the torn staged state epoch_9" in runs[2]["log"]
    # keep_full_states=1 (the default): epoch_0 went once epoch_1 was complete
    assert sorted(p.name for p in (ckpt / "full_state").iterdir()) == ["epoch_1"]
    assert "deleted the older full state" in runs[1]["log"] and "epoch_0 (keep_full_states=1)" in runs[1]["log"]
    assert not (ckpt / shim.STAGING_DIR).exists()
    for state in (ckpt / "full_state").iterdir():
        assert shim.marker_problem(state) is None

    # the proof: every logged step equals the uninterrupted run's, and so do the final weights
    for run in runs:
        assert differences(uninterrupted["steps"], run) == []
    assert final_weights(ckpt) == uninterrupted["weights"]
    assert (ckpt / "full_state" / "epoch_1" / "model.safetensors").read_bytes() == \
        (uninterrupted["ckpt"] / "full_state" / "epoch_1" / "model.safetensors").read_bytes()


@pytest.mark.training
def test_periodic_saves_change_nothing_and_a_kill_resumes_from_the_last_one(train_kwargs, uninterrupted, tmp_path):
    """full_state_every_min so short that every step is due: each step's state is saved and training goes on;
    SIGKILL to the whole run (no warning) mid-epoch 1; the rerun starts right after the last periodic save."""
    ckpt = tmp_path / "ckpt"
    run = Run({**train_kwargs(ckpt), "full_state_every_min": 1e-4, "keep_full_states": 2})

    def saved_in_epoch_1(_records) -> bool:
        meta = newest_metadata(ckpt)
        return bool(meta and meta["current_epoch"] == 1 and (meta["global_step"] or 0) >= 4)

    killed = run(saved_in_epoch_1, sig=signal.SIGKILL)
    assert killed["sent"] and "periodic full-state save at" in killed["log"]
    rest = run()
    epoch, batch = rest["start"]
    assert epoch == 1 and batch >= 5, rest["start"]  # from a periodic save, not from the end of epoch 0
    assert min(keyed(rest)) == rest["start"]
    assert differences(uninterrupted["steps"], killed) == [] and differences(uninterrupted["steps"], rest) == []
    assert final_weights(ckpt) == uninterrupted["weights"]
    assert sorted(p.name for p in (ckpt / "full_state").iterdir()) == ["epoch_0", "epoch_1"]  # keep_full_states=2
    assert rest["saved"] == {"current_epoch": 1, "global_step": None, "samples_seen": FINAL_SAMPLES}


@pytest.mark.training
@pytest.mark.skipif(not os.environ.get("HPC_SFT_TEST_SHOW_DEFECTS"),
                    reason="demonstration (set HPC_SFT_TEST_SHOW_DEFECTS=1): the same interruptions without the fix")
def test_without_exact_resume_the_comparison_fails(train_kwargs, uninterrupted, tmp_path):
    ckpt = tmp_path / "ckpt"
    runs = interrupted_sequence(train_kwargs(ckpt), exact=False)
    weights = ckpt / "hf_format" / f"samples_{FINAL_SAMPLES}" / "model.safetensors"
    wrong = [d for run in runs for d in differences(uninterrupted["steps"], run)]
    final = max(int(p.name.split("_")[1]) for p in (ckpt / "hf_format").glob("samples_*"))
    print(f"final samples_seen {final} (uninterrupted: {FINAL_SAMPLES}); {len(wrong)} steps differ: {wrong[:5]}")
    assert wrong or not weights.is_file() or weights.read_bytes() != uninterrupted["weights"]


# ---------------------------------------------------------------- the step count (no training)


def test_saved_step_counts_completed_steps_of_the_current_epoch(monkeypatch):
    """All three on-demand save points of main_ds.train, with instructlab-training's process-relative
    global_step, for a process that resumed into epoch 1 after 5 of its batches."""
    from types import SimpleNamespace

    class Accelerator:  # stands in for instructlab.training.accelerator.Accelerator
        def __init__(self):
            self.train_loader = SimpleNamespace(sampler=SimpleNamespace(epoch=None))

        def take_optimizer_step(self):
            pass

    saved = []

    def save_on_demand_checkpoint(args, accelerator, model, tokenizer, samples_seen, epoch, global_step, is_lora):
        saved.append(global_step)

    monkeypatch.setattr(shim, "_applied_steps", {})
    accel_module = SimpleNamespace(Accelerator=Accelerator)
    odc_module = SimpleNamespace(save_on_demand_checkpoint=save_on_demand_checkpoint)
    shim.patch_accelerator(accel_module)
    shim.patch_on_demand_checkpoint(odc_module)
    args = SimpleNamespace(current_epoch=1, last_step=5)
    accel = accel_module.Accelerator()

    def save(epoch, ilt_global_step):
        odc_module.save_on_demand_checkpoint(args=args, accelerator=accel, model=None, tokenizer=None,
                                             samples_seen=0, epoch=epoch, global_step=ilt_global_step,
                                             is_lora=False)
        return saved[-1]

    accel.train_loader.sampler.epoch = 1  # main_ds: set_epoch(1), batches 1..5 skipped (global_step 1..5)
    assert save(1, 6) == 5  # during batch 6, before its step
    accel.take_optimizer_step()
    assert save(1, 6) == 6  # after the step of batch 6
    for _ in range(9):
        accel.take_optimizer_step()  # batches 7..15 of 15
    assert save(1, 15) == 15  # after the last step of the epoch
    accel.train_loader.sampler.epoch = 2  # next epoch of the same process: global_step goes on at 16
    assert save(2, 16) == 0  # during its first batch
    accel.take_optimizer_step()
    accel.take_optimizer_step()
    assert save(2, 17) == 2  # after its second step (instructlab-training would save 17)


# ---------------------------------------------------------------- publish protocol (no training)


def make_state(path: Path, payload: bytes = b"weights", marker: bool = True, global_step=None) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(payload)
    (path / "sub").mkdir()
    (path / "sub" / "shard.bin").write_bytes(b"x" * 10)
    if marker:
        shim.write_marker(str(path), {"current_epoch": 0, "samples_seen": 1, "global_step": global_step})
    return path


def test_marker_lists_files_and_sizes(tmp_path):
    state = make_state(tmp_path / "s", b"abc", global_step=3)
    record = json.loads((state / shim.MARKER).read_text())
    assert record["files"] == {"model.safetensors": 3, "sub/shard.bin": 10}
    assert record["metadata"] == {"current_epoch": 0, "samples_seen": 1, "global_step": 3}
    assert shim.marker_problem(state) is None
    (state / "model.safetensors").write_bytes(b"ab")
    assert "wrong size" in shim.marker_problem(state)
    assert "no " in shim.marker_problem(make_state(tmp_path / "t", marker=False))


def test_publish_replaces_and_removes_the_old_state(tmp_path):
    final = make_state(tmp_path / "full_state" / "epoch_0", b"old")
    staged = make_state(tmp_path / shim.STAGING_DIR / "full_state" / "epoch_0", b"new")
    aside = tmp_path / shim.STAGING_DIR / "replaced" / "epoch_0"
    shim.publish(str(staged), str(final), str(aside))
    assert (final / "model.safetensors").read_bytes() == b"new"
    assert not staged.exists() and not aside.exists()


def test_repair_every_crash_point(tmp_path):
    staging = tmp_path / shim.STAGING_DIR
    # epoch_0: crash after the marker, before any rename -> roll forward, old one deleted
    make_state(tmp_path / "full_state" / "epoch_0", b"old0")
    make_state(staging / "full_state" / "epoch_0", b"new0")
    # epoch_1: crash between the renames -> staged published, moved-aside deleted
    make_state(staging / "replaced" / "epoch_1", b"old1")
    make_state(staging / "full_state" / "epoch_1", b"new1")
    # epoch_2: crash after both renames, before the old one was deleted
    make_state(tmp_path / "full_state" / "epoch_2", b"new2")
    make_state(staging / "replaced" / "epoch_2", b"old2")
    # epoch_3: moved aside, and its successor is torn (no marker) -> the old one comes back
    make_state(staging / "replaced" / "epoch_3", b"old3")
    make_state(staging / "full_state" / "epoch_3", b"torn", marker=False)
    # epoch_4: a torn save and nothing else -> gone
    make_state(staging / "full_state" / "epoch_4", b"torn", marker=False)
    # epoch_5: a complete marker but a file cut short afterwards -> torn
    cut = make_state(staging / "full_state" / "epoch_5", b"12345")
    (cut / "model.safetensors").write_bytes(b"12")

    done = shim.repair_full_states(tmp_path, log=lambda line: None)

    content = {p.name: (p / "model.safetensors").read_bytes() for p in (tmp_path / "full_state").iterdir()}
    assert content == {"epoch_0": b"new0", "epoch_1": b"new1", "epoch_2": b"new2", "epoch_3": b"old3"}
    assert not staging.exists()
    assert len(done) == 7, done
    assert shim.repair_full_states(tmp_path) == []  # nothing left to do


def test_repair_without_staging_is_a_no_op(tmp_path):
    make_state(tmp_path / "full_state" / "epoch_0")
    assert shim.repair_full_states(tmp_path) == []
    assert shim.marker_problem(tmp_path / "full_state" / "epoch_0") is None


# ---------------------------------------------------------------- signal shield (no training)


@pytest.mark.parametrize("shield", ["USR1,USR2", ""])
def test_shield_makes_any_python_process_ignore_the_signals(shield):
    code = ("import os, signal\n"
            "os.kill(os.getpid(), signal.SIGUSR1); os.kill(os.getpid(), signal.SIGUSR2)\n"
            "print('alive', signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN, 'torch' in __import__('sys').modules)")
    env = dict(os.environ, PYTHONPATH=str(WORKER_DIR), HPC_SFT_SHIELD_SIGNALS=shield)
    env.pop("HPC_SFT_EXACT_RESUME", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    if shield:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["alive", "True", "False"]
    else:
        assert proc.returncode == -signal.SIGUSR1
