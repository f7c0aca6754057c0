"""Runs of the real instructlab-training on CPU in a child process (sft(executor='local')), which a test may
signal at points it picks by watching the metrics file, and the step-by-step comparison of two runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hpc_sft._worker.hpc_sft_shim import resume as shim
from tests.helpers import REPO

WORKER_DIR = REPO / "hpc_sft" / "_worker"
EPOCHS = 2
STEPS_PER_EPOCH = 16  # 256 samples, effective batch 16
FINAL_SAMPLES = 256 * EPOCHS

# The process that calls run_training: sft() in a child, so that a signal reaches nothing else here.
RUNNER = r"""
import json, sys
import hpc_sft
kw = json.loads(sys.argv[1])
if not kw.pop("_exact_resume"):
    from hpc_sft.backends.instructlab import backend as backend
    plain_env = backend.training_env
    def training_env(launch):
        env = plain_env(launch)
        env["HPC_SFT_EXACT_RESUME"] = "0"
        return env
    backend.training_env = training_env
try:
    result = hpc_sft.sft(**kw)
except hpc_sft.errors.Interrupted as exc:  # stopped on the signal after saving: what the test expects then
    print("HPC_SFT_TEST_INTERRUPTED", exc.signal_name, flush=True)
else:
    print("HPC_SFT_TEST_RESULT " + json.dumps({"samples_seen": result.samples_seen}), flush=True)
"""


def metric_records(ckpt: Path, offset: int = 0) -> list[dict]:
    """Per-step records (complete lines only) of the metrics file from byte ``offset``."""
    path = ckpt / "training_params_and_metrics_global0.jsonl"
    if not path.is_file():
        return []
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    records = []
    for line in data.split(b"\n")[:-1]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "avg_loss" in record:
            records.append(record)
    return records


def metrics_size(ckpt: Path) -> int:
    path = ckpt / "training_params_and_metrics_global0.jsonl"
    return path.stat().st_size if path.is_file() else 0


def newest_metadata(ckpt: Path):
    """Metadata of the full state instructlab-training would resume from (None: it starts afresh)."""
    root = ckpt / "full_state"
    states = sorted(root.iterdir(), key=lambda p: int(p.name.rsplit("_", 1)[1])) if root.is_dir() else []
    if not states:
        return None
    if (states[-1] / shim.MARKER).is_file():
        return json.loads((states[-1] / shim.MARKER).read_text())["metadata"]
    import torch  # a state written without the shim (the demonstration without the fix)

    meta = torch.load(states[-1] / "training_metadata.json", weights_only=True)
    return {"global_step": None, **meta}


def start_of(meta) -> tuple[int, int]:
    """(epoch, batch index) of the first batch a run resuming from ``meta`` trains."""
    if meta is None:
        return 0, 1
    if meta["global_step"] is None:
        return meta["current_epoch"] + 1, 1
    return meta["current_epoch"], meta["global_step"] + 1


class Run:
    """One sft() call in a child process; ``interrupt(records) -> bool`` says when to send SIGUSR2."""

    def __init__(self, kwargs: dict, exact: bool = True):
        self.kwargs = dict(kwargs, _exact_resume=exact)
        self.ckpt = Path(kwargs["ckpt_output_dir"])

    def __call__(self, interrupt=None, whole_group: bool = False, timeout: float = 240,
                 sig: signal.Signals = signal.SIGUSR2) -> dict:
        """Run to the end, or until interrupt(records) says to send `sig` (SIGKILL: to the whole group, as a
        node failure would)."""
        offset, resumed_from = metrics_size(self.ckpt), newest_metadata(self.ckpt)
        log = self.ckpt.parent / f"{self.ckpt.name}-run-{time.monotonic_ns()}.out"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(self.kwargs)], cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "HPC_SFT_VERBOSE": "1"})  # the backend's log, asserted on
        sent, deadline = False, time.monotonic() + timeout
        try:
            while proc.poll() is None:
                assert time.monotonic() < deadline, f"run did not finish in {timeout} s; see {log}"
                if interrupt is not None and not sent and interrupt(metric_records(self.ckpt, offset)):
                    (os.killpg if whole_group or sig == signal.SIGKILL else os.kill)(proc.pid, sig)
                    sent = True
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        text = log.read_text()
        if sent and sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL, f"sft() child exited with {proc.returncode}:\n{text[-4000:]}"
        else:
            assert proc.returncode == 0, f"sft() child exited with {proc.returncode}:\n{text[-4000:]}"
            assert ("HPC_SFT_TEST_INTERRUPTED" in text) == sent, \
                f"interrupted is not the same as signalled:\n{text[-4000:]}"
        return {"records": metric_records(self.ckpt, offset), "first_epoch": start_of(resumed_from)[0],
                "start": start_of(resumed_from), "sent": sent, "saved": newest_metadata(self.ckpt), "log": text}


def keyed(run: dict) -> dict:
    """{(epoch, batch index in epoch): record}; "step" counts per process, from the first epoch it ran."""
    return {(r["epoch"], r["step"] - (r["epoch"] - run["first_epoch"]) * STEPS_PER_EPOCH): r
            for r in run["records"]}


def final_weights(ckpt: Path) -> bytes:
    return (ckpt / "hf_format" / f"samples_{FINAL_SAMPLES}" / "model.safetensors").read_bytes()


def differences(reference: dict, run: dict) -> list[str]:
    """Every logged step of ``run`` must match the uninterrupted run's step at the same place."""
    found = []
    for key, record in keyed(run).items():
        expected = reference.get(key)
        same = expected is not None and all(record[f] == expected[f] for f in ("avg_loss", "samples_seen", "lr"))
        if not same:
            found.append(f"epoch {key[0]} batch {key[1]}: {record['avg_loss']} {record['samples_seen']} "
                         f"vs {expected and (expected['avg_loss'], expected['samples_seen'])}")
    return found


def interrupted_sequence(kwargs: dict, exact: bool, before_run=None) -> list[dict]:
    """Three interruptions: epoch 0 (first epoch of a fresh process), epoch 1 of a process that began in
    epoch 0 (to its whole process group), epoch 1 again after a mid-epoch resume; then runs to the end."""
    run, ckpt = Run(kwargs, exact), Path(kwargs["ckpt_output_dir"])
    plan = [
        (lambda recs: any(r["epoch"] == 0 and r["step"] >= 4 for r in recs), False),
        (lambda recs: any(r["epoch"] == 1 for r in recs), True),
        (lambda recs: len(recs) >= 2, False),
        (None, False),
    ]
    runs = []
    for number, (interrupt, group) in enumerate(plan):
        if before_run:
            before_run(number, ckpt)
        runs.append(run(interrupt, whole_group=group))
    return runs
