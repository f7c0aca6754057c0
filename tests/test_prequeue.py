"""Mistakes caught before the queue: pure checks that sft() and the CLI refuse with the key and the fix."""
import json
import os
import shutil
from pathlib import Path

import pytest

import hpc_sft
from hpc_sft.config.slurm_options import time_to_minutes
from hpc_sft.errors import ConfigError
from tests.helpers import MSG, cli, write_recipe


def refused(kwargs, *words):
    with pytest.raises(ConfigError) as exc:
        hpc_sft.sft(**kwargs)
    for word in words:
        assert word in str(exc.value), str(exc.value)
    return str(exc.value)


def test_max_seq_len_above_max_tokens_per_gpu(base_kwargs):
    text = refused({**base_kwargs, "max_seq_len": 2048, "max_tokens_per_gpu": 1000},
                   "max_seq_len: 2048 is larger than max_tokens_per_gpu=1000")
    assert "Fix: raise max_tokens_per_gpu to at least 2048" in text


@pytest.mark.parametrize("over,world", [
    ({"nproc_per_node": 4, "nnodes": 2}, 8),
    ({"nproc_per_node": 3, "executor": "slurm", "slurm": {"nodes": 2}}, 6),
])
def test_effective_batch_below_process_count(base_kwargs, over, world):
    kwargs = {**base_kwargs, "effective_batch_size": world - 1, **over}
    text = refused(kwargs, "effective_batch_size", f"smaller than the {world} training processes")
    assert f"at least {world}" in text


@pytest.mark.parametrize("text,field", [
    ("25:99", "seconds = 99"), ("10:60:00", "minutes = 60"), ("1-24", "hours = 24"),
    ("1-23:60", "minutes = 60"), ("2-00:00:75", "seconds = 75"),
])
def test_out_of_range_time_fields_are_refused(text, field):
    with pytest.raises(ConfigError) as exc:
        time_to_minutes(text)
    assert str(exc.value).startswith("slurm.time:") and field in str(exc.value) and "Fix:" in str(exc.value)


@pytest.mark.parametrize("text,minutes", [("48:00:00", 2880), ("25:59", 26), ("1-23:59:59", 2880), ("90", 90)])
def test_in_range_times_still_pass(text, minutes):
    assert time_to_minutes(text) == minutes


def test_local_recipe_skeleton_carries_no_slurm_table():
    import tomllib

    from hpc_sft.config.skeleton import recipe_text

    assert "slurm" not in tomllib.loads(recipe_text("r.toml", "local"))
    assert "slurm" in tomllib.loads(recipe_text("r.toml", "slurm"))


NO_ANSWER = {"messages": [{"role": "user", "content": "hi"}]}


def test_one_conversation_without_an_answer_is_fine(base_kwargs, tmp_path):
    from tests.helpers import write_jsonl
    from hpc_sft.pipeline import validate

    data = write_jsonl(tmp_path / "mixed.jsonl", [MSG, NO_ANSWER])
    assert validate({**base_kwargs, "data_path": str(data)}).data_path == str(data)
    write_jsonl(data, [NO_ANSWER, NO_ANSWER])
    text = refused({**base_kwargs, "data_path": str(data)}, "data_path", "none of its 2 conversations has an "
                   "assistant turn", "Fix:")
    assert str(data) in text


def test_model_dir_without_tokenizer_is_refused_before_anything_starts(base_kwargs, tmp_path):
    refused(base_kwargs, "model_path", "has no tokenizer files", "tokenizer.save_pretrained")
    assert not (tmp_path / "ckpt").exists()  # nothing started, nothing created


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer.model", "tokenizer_config.json"])
def test_any_tokenizer_file_is_enough(base_kwargs, model_dir, name):
    from hpc_sft.pipeline import model_checks, validate

    (model_dir / name).write_text("{}")
    assert model_checks(validate(base_kwargs), dry_run=False).ran


def shared_folder():
    """A folder another user can read (pytest's tmp_path is private to root)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="hpc-sft-prequeue-"))
    folder.chmod(0o755)
    return folder, lambda: shutil.rmtree(folder)


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv")
@pytest.mark.parametrize("dry_run", [True, False])
def test_unwritable_ckpt_output_dir_is_refused_without_creating_anything(dry_run):
    folder, cleanup = shared_folder()
    try:
        (folder / "locked").mkdir(mode=0o555)
        recipe = write_recipe(folder, "locked/run1/ckpt")
        res = cli("submit", recipe, *(["--dry-run"] if dry_run else []), user=65534)
        assert res.returncode == 2, res.stderr
        assert "recipe.toml:5: ckpt_output_dir:" in res.stderr and "cannot be created" in res.stderr
        assert "locked is not writable by this user" in res.stderr and "Fix: choose a ckpt_output_dir" in res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1
        assert list((folder / "locked").iterdir()) == []
    finally:
        cleanup()


def test_cuda_requested_locally_without_a_gpu(base_kwargs, model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    (model_dir / "tokenizer.json").write_text("{}")
    text = refused({**base_kwargs, "device": "cuda"}, "device: is 'cuda' but no GPU is visible", 'device = "cpu"')
    assert "AssertionError" not in text and not (tmp_path / "ckpt").exists()


def test_submit_without_slurm_on_path_is_one_clear_line(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    recipe = write_recipe(tmp_path, "ckpt")
    env = {**os.environ, "PATH": str(empty_bin)}
    res = cli("submit", recipe, env=env)
    assert res.returncode == 5, res.stderr
    assert "Slurm's client commands (sbatch, srun, scontrol) are not on PATH" in res.stderr
    assert "module load slurm" in res.stderr and 'executor = \\"local\\"' not in res.stderr
    assert 'use executor = "local"' in res.stderr and "Nothing was queued" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "ckpt").exists()
    dry = cli("submit", recipe, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "# check not run: cluster: partition" in dry.stdout and "sbatch --test-only" in dry.stdout
    assert "are not on PATH" in dry.stdout and not (tmp_path / "ckpt").exists()


def test_slurm_installed_but_not_configured_is_one_clear_line(tmp_path):
    if shutil.which("sbatch") is None:
        pytest.skip("no Slurm client installed here")
    recipe = write_recipe(tmp_path, "ckpt")
    res = cli("submit", recipe, env={**os.environ, "SLURM_CONF": "/nonexistent"})
    assert res.returncode == 5, res.stderr
    assert "Slurm is installed here but not usable" in res.stderr and "set SLURM_CONF" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "ckpt").exists()


def test_demo_recipe_goes_through_the_one_path(tiny_model, tmp_path):
    from hpc_sft import pipeline
    from hpc_sft.config import recipe as recipes
    from hpc_sft.demo import DEMO_SFT
    from hpc_sft.config.skeleton import recipe_text

    (tmp_path / "train.jsonl").write_text(json.dumps(MSG) + "\n")
    path = tmp_path / "recipe.toml"
    path.write_text(recipe_text(path.name, "local", {**DEMO_SFT, "model_path": json.dumps(str(tiny_model))}))
    prepared = pipeline.prepare(recipes.load(path))
    assert prepared.checks.ran == (pipeline.MODEL_FILES,) and prepared.checks.warnings == ()
    assert prepared.plan.describe().startswith("local run: 1 node(s)")


def test_slurm_options_with_the_local_executor_are_refused_in_python_too(base_kwargs, tmp_path):
    refused({**base_kwargs, "slurm": {"nodes": 2}}, "slurm: is given but executor is 'local'", "executor='slurm'")
    assert not (tmp_path / "ckpt").exists()


def test_cli_refuses_a_model_without_tokenizer_and_the_dry_run_warns(tmp_path):
    recipe = write_recipe(tmp_path, "ckpt")
    (tmp_path / "model" / "tokenizer.json").unlink()
    res = cli("submit", recipe)
    assert res.returncode == 2, res.stderr
    assert "recipe.toml:3: model_path:" in res.stderr and "has no tokenizer files" in res.stderr
    assert "Fix: save the tokenizer" in res.stderr and "Traceback" not in res.stderr
    dry = cli("submit", recipe, "--dry-run")
    assert dry.returncode == 0 and "# warning: model_path:" in dry.stdout and "(submit refuses this)" in dry.stdout
    assert not (tmp_path / "ckpt").exists()
