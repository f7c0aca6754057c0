"""The trl backend on the real cluster: 2 nodes, preempted twice, ends bit-identical to an uninterrupted run."""
import json

import pytest

import hpc_sft
from hpc_sft.progress import run_status
from hpc_sft.rundir.layout import METRICS_FILE
from hpc_sft.rundir.status import read_status
from tests.helpers import tiny_sft_kwargs
from tests.loading import assert_loads_as_trained, newest_trl_checkpoint
from tests.slurm_helpers import preempt_at

pytestmark = [pytest.mark.slurm, pytest.mark.training]
pytest.importorskip("trl", reason="trl is not installed")


@pytest.fixture(scope="module")
def data_960(tmp_path_factory):
    from hpc_sft.tiny import write_tiny_dataset

    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "train-960.jsonl", n=960)


def trl_kwargs(tiny_model, data, ckpt):
    """2 epochs of 960 samples, 16 per step (8 per rank): 120 optimizer steps; same seed everywhere."""
    kw = tiny_sft_kwargs(tiny_model, data, ckpt, num_epochs=2, backend="trl", seed=11)
    return kw


def samples_now(ckpt) -> int:
    path = ckpt / METRICS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return max([row.get("samples_seen", 0) for row in rows] or [0])


def weights(result):
    return (result.checkpoint_path / "model.safetensors").read_bytes()


def test_two_node_trl_run_preempted_twice_is_bit_identical(slurm_cluster, tiny_model, data_960, tmp_path,
                                                           monkeypatch):
    reference = hpc_sft.sft(**trl_kwargs(tiny_model, data_960, tmp_path / "reference"), nproc_per_node=2)
    ckpt = tmp_path / "ckpt"
    slurm = {"nodes": 2, "time": "00:30:00", "signal_lead_s": 60, "partition": "main", "max_requeues": 10}
    with monkeypatch.context() as mp:  # node 1's torchrun leaves 5 s after node 0's: a requeue must not kill it
        mp.setenv("HPC_SFT_FAULT_NODE", "1")  # (and only node 1: the step delay is there too, every rank waits)
        mp.setenv("HPC_SFT_FAULT_LAUNCHER_EXIT_DELAY_S", "5")
        mp.setenv("HPC_SFT_FAULT_STEP_DELAY_S", "0.1")  # the 2nd preemption lands 45 steps (7 s) before the end
        job = hpc_sft.sft(**trl_kwargs(tiny_model, data_960, ckpt), executor="slurm", slurm=slurm)
    preempt_at(job, (240, 1200), lambda: samples_now(ckpt))  # mid epoch 0; mid epoch 1 of a resumed run
    result = job.wait(timeout_s=600)
    assert result.restarts >= 2
    assert result.samples_seen == reference.samples_seen == 1920
    assert weights(result) == weights(reference)
    assert_loads_as_trained(result.checkpoint_path, newest_trl_checkpoint(ckpt), tiny_model)
    stops = read_status(ckpt)["stops"]
    assert [s["action"] for s in stops][-1] == "finish" and sum(s["action"] == "requeue" for s in stops) >= 2
    assert any(960 < s["samples_seen"] < 1920 for s in stops if s["action"] == "requeue"), stops
    logs = [p.read_text() + p.with_suffix(".err").read_text() for p in job.stdout_paths]
    for node, text in enumerate(logs):  # every node stopped by itself, on every attempt, and none was killed
        assert text.count("decision: requeue") == result.restarts, (node, text[-3000:])
        assert "ended by signal" not in text and "failed" not in text, (node, text[-3000:])
    assert "torchrun leaves late" in (ckpt / "full_logs_global1.log").read_text()
    assert "resuming from" in (ckpt / "full_logs_global0.log").read_text(), logs[0][-2000:]
    assert not list(ckpt.glob(".hpc_sft_stop.*"))
    status = run_status(ckpt)  # what `hpc-sft status` shows
    assert (status["samples_seen"], status["samples_total"], status["outcome"]) == (1920, 1920, "finished")
    assert status["loss"] is not None
