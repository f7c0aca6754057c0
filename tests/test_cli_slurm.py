"""CLI against the real cluster: the bad-recipe corpus queues nothing; submit -> status -> logs -> cancel."""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpc_sft.cli import main

CORPUS = sorted((Path(__file__).parent / "bad_recipes").glob("*.toml"))


def expectation(path: Path) -> tuple[str, bool]:
    lines = path.read_text().splitlines()
    return lines[0].removeprefix("# expect: "), "# needs: cluster" in lines[:3]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_bad_recipe_fails_on_dry_run(path):
    expect, needs_cluster = expectation(path)
    if needs_cluster:
        pytest.skip("checked against the real cluster by test_bad_recipes_queue_nothing")
    res = invoke("submit", path, "--dry-run")
    assert res.exit_code not in (0, 1), res.output  # a deliberate error code, not a crash
    assert expect in res.output and str(path.name) in res.output and "Traceback" not in res.output


def queued_jobs(since: str) -> list[str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", since, "-o", "JobID"], capture_output=True, text=True,
                         check=True).stdout.split()
    return out + subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.slurm
def test_bad_recipes_queue_nothing(slurm_cluster):
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    before = queued_jobs(since)
    for path in CORPUS:
        expect, _ = expectation(path)
        res = invoke("submit", path)
        assert res.exit_code not in (0, 1), (path.name, res.output)
        assert expect in res.output, (path.name, res.output)
        assert "Traceback" not in res.output
    time.sleep(1)
    assert set(queued_jobs(since)) - set(before) == set()  # nothing new (a job that was ending may be gone)


@pytest.mark.slurm
@pytest.mark.training
def test_submit_status_logs_cancel(slurm_cluster, tiny_model, tmp_path):
    from hpc_sft.tiny import write_tiny_dataset

    write_tiny_dataset(tmp_path / "train.jsonl", n=1200)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'executor = "slurm"\n[sft]\nmodel_path = "{tiny_model}"\ndata_path = "train.jsonl"\n'
                      'ckpt_output_dir = "ckpt"\nnum_epochs = 20\neffective_batch_size = 16\nlearning_rate = 1e-3\n'
                      'max_seq_len = 256\nmax_tokens_per_gpu = 4000\ndevice = "cpu"\n'
                      '[slurm]\nnodes = 1\ntime = "00:30:00"\nsignal_lead_s = 60\n')
    res = invoke("submit", recipe)
    assert res.exit_code == 0, res.output
    job_id = re.search(r"submitted job (\d+)", res.output).group(1)
    at_once = invoke("submit", recipe)  # a second writer of the same ckpt_output_dir, before the first starts
    assert at_once.exit_code == 5 and f"is in use by Slurm job {job_id}" in at_once.output, at_once.output
    assert f"hpc-sft logs {job_id} --follow" in res.output
    deadline = time.monotonic() + 240
    while True:  # wait for real progress
        status = invoke("status", job_id, "--json")
        assert status.exit_code == 0, status.output
        info = json.loads(status.output)
        if info["samples_seen"]:
            break
        assert time.monotonic() < deadline, info
        time.sleep(2)
    assert info["state"] == "RUNNING" and info["samples_total"] == 24000
    second = invoke("submit", recipe)  # a second writer of the same ckpt_output_dir is refused at submit
    assert second.exit_code == 5 and f"is in use by Slurm job {job_id}" in second.output, second.output
    code = ("import sys; from click.testing import CliRunner; from hpc_sft.cli import main; "
            f"r = CliRunner().invoke(main, ['status', {job_id!r}]); assert r.exit_code == 0, r.output; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'instructlab')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)  # status stays light on a login node
    text = invoke("status", job_id).output
    assert f"job {job_id}: RUNNING" in text and "progress: [" in text and "/24000 samples" in text
    logs = invoke("logs", job_id, "--node", "0")
    assert logs.exit_code == 0 and "HPC_SFT_NODE_PLAN" in logs.output and "loss =" in logs.output
    merged = invoke("logs", job_id, "--all").output.splitlines()
    assert any(line.startswith("[node0] HPC_SFT_NODE_PLAN") for line in merged), merged[:20]
    assert any(line.startswith("[node0 err] ") for line in merged) and all(line.startswith("[node0") for line in merged)
    assert any(line.startswith(("[node0] [rank0] ", "[node0 err] [rank0] ")) for line in merged), merged[:40]
    assert invoke("cancel", job_id).exit_code == 0
    deadline = time.monotonic() + 60
    while json.loads(invoke("status", job_id, "--json").output)["state"] != "CANCELLED":
        assert time.monotonic() < deadline
        time.sleep(1)
