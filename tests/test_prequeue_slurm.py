"""Pre-queue checks against the real cluster: sbatch --test-only, cluster checks on dry runs and in sft(),
and a refused sbatch that leaves nothing behind."""
import subprocess
from pathlib import Path

import pytest

import hpc_sft
from hpc_sft.errors import ConfigError, SubmitError
from tests.helpers import cli, write_recipe

pytestmark = pytest.mark.slurm


def queued(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.startswith(".submission_file_") or p.suffix == ".pkl")


@pytest.mark.parametrize("dry_run", [True, False])
def test_unknown_additional_option_is_refused_by_sbatch_test_only(slurm_cluster, tmp_path, dry_run):
    recipe = write_recipe(tmp_path, "ckpt-bogus", extra="")
    recipe.write_text(recipe.read_text() + 'additional = { bogus_opt = "1" }\n')
    res = cli("submit", recipe, *(["--dry-run"] if dry_run else []))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "recipe.toml:16: slurm.additional.bogus_opt: refused by sbatch --test-only" in res.stderr
    assert "unrecognized option '--bogus-opt=1'" in res.stderr and "Fix: use an sbatch long option" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "ckpt-bogus").exists() and queued("hpc-sft-ckpt-bogus") == []


def test_dry_run_runs_the_cluster_checks_and_says_so(slurm_cluster, tmp_path):
    recipe = write_recipe(tmp_path, "ckpt")
    res = cli("submit", recipe, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "# check ran: cluster: partition, node count, MaxTime" in res.stdout
    assert "# check ran: sbatch --test-only with the rendered options" in res.stdout
    assert "check not run" not in res.stdout
    res = cli("submit", recipe, "--dry-run", "--set", "slurm.partition=gpu")
    assert res.returncode == 2 and "slurm.partition: no partition 'gpu' on this cluster" in res.stderr, res.stderr
    assert not (tmp_path / "ckpt").exists()


def test_sft_and_train_run_the_same_cluster_checks(slurm_cluster, tmp_path):
    write_recipe(tmp_path, "ckpt")
    kwargs = dict(model_path=str(tmp_path / "model"), data_path=str(tmp_path / "train.jsonl"),
                  ckpt_output_dir=str(tmp_path / "ckpt"), num_epochs=1, effective_batch_size=8, learning_rate=1e-4,
                  max_seq_len=256, max_tokens_per_gpu=2048, device="cpu", executor="slurm")
    with pytest.raises(ConfigError, match="slurm.partition: no partition 'gpu' on this cluster"):
        hpc_sft.sft(**kwargs, slurm={"partition": "gpu", "time": "00:30:00", "signal_lead_s": 60})
    algo = hpc_sft.create_algorithm("sft")
    with pytest.raises(ConfigError, match="slurm.nodes: 9 nodes asked"):
        algo.train(**kwargs, slurm={"nodes": 9, "time": "00:30:00", "signal_lead_s": 60})
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("folder_exists", [False, True])
def test_refused_sbatch_leaves_no_job_files(slurm_cluster, tmp_path, folder_exists):
    from hpc_sft.executors.slurm.executor import SlurmExecutor
    from hpc_sft.pipeline import validate

    write_recipe(tmp_path, "ckpt")
    folder = tmp_path / "jobs"
    if folder_exists:
        folder.mkdir()
        (folder / "mine.txt").write_text("kept")
    config = validate(dict(model_path=str(tmp_path / "model"), data_path=str(tmp_path / "train.jsonl"),
                           ckpt_output_dir=str(tmp_path / "ckpt"), num_epochs=1, effective_batch_size=8,
                           learning_rate=1e-4, max_seq_len=256, max_tokens_per_gpu=2048, device="cpu",
                           executor="slurm", slurm={"time": "00:30:00", "signal_lead_s": 60, "folder": str(folder),
                                                    "additional": {"partition": "no_such_partition"}}))
    executor = SlurmExecutor()
    with pytest.raises(SubmitError) as exc:  # the real sbatch refuses it (the check step is skipped on purpose)
        executor.submit(executor.plan(config))
    assert "sbatch refused the job" in str(exc.value) and "Nothing was queued" in str(exc.value)
    assert "invalid partition" in str(exc.value).lower(), str(exc.value)
    assert queued("hpc-sft-ckpt") == []
    if folder_exists:
        assert sorted(p.name for p in folder.rglob("*")) == ["mine.txt"]
    else:
        assert not folder.exists()
    assert leftovers(tmp_path) == [] and not (tmp_path / "ckpt").exists()


def test_controller_down_is_one_clear_line(slurm_cluster, tmp_path):
    import os
    import re

    conf = Path(os.environ["SLURM_CONF"]).read_text()
    (tmp_path / "slurm.conf").write_text(re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=6999", conf))
    recipe = write_recipe(tmp_path, "ckpt")
    res = cli("submit", recipe, env={**os.environ, "SLURM_CONF": str(tmp_path / "slurm.conf")})
    assert res.returncode == 5, res.stderr
    assert "Slurm is installed here but not usable: Slurmctld(primary) at" in res.stderr and "is DOWN" in res.stderr
    assert "Nothing was queued" in res.stderr and "Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "ckpt").exists()


def test_dry_run_compares_grace_time_with_a_measured_save(slurm_cluster, tmp_path):
    import json

    from hpc_sft.backends.instructlab.checkpoints import MARKER

    state = tmp_path / "ckpt" / "full_state" / "epoch_0"
    state.mkdir(parents=True)
    (state / MARKER).write_text(json.dumps({"files": {}, "save_seconds": 45.0}))
    recipe = write_recipe(tmp_path, "ckpt")  # partition main: preemptible, GraceTime 30 s
    res = cli("submit", recipe, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "# warning: the partition's GraceTime (30s) is shorter than a measured full-state save (45.0s)" in res.stdout
    assert "# warning: slurm.signal_lead_s=60 is less than twice a measured full-state save" in res.stdout
