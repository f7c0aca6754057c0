"""A rerun into a ckpt_output_dir trained with other settings is refused, naming the keys; free keys may differ."""
from __future__ import annotations

import pytest

import hpc_sft
from hpc_sft import pipeline
from hpc_sft.rundir import settings as run_settings
from tests.helpers import tiny_sft_kwargs, write_jsonl

pytest.importorskip("instructlab.training", reason="instructlab-training is not installed")


@pytest.fixture(scope="module")
def trained(tiny_model, tiny_data, tmp_path_factory):
    """One real finished local run (1 epoch of the tiny job)."""
    ckpt = tmp_path_factory.mktemp("settings") / "ckpt"
    kwargs = tiny_sft_kwargs(tiny_model, tiny_data, ckpt)
    hpc_sft.sft(**kwargs)
    return kwargs


def prepare(**values):
    return pipeline.prepare(pipeline.validate(values))


def test_the_run_recorded_its_settings(trained):
    saved = run_settings.recorded(trained["ckpt_output_dir"])
    assert saved["num_epochs"] == 1 and saved["learning_rate"] == 1e-3 and saved["effective_batch_size"] == 16


def test_changed_training_settings_are_refused_naming_each_key(trained):
    before = sorted(p.name for p in __import__("pathlib").Path(trained["ckpt_output_dir"]).rglob("*"))
    with pytest.raises(ValueError) as err:
        hpc_sft.sft(**{**trained, "num_epochs": 2, "effective_batch_size": 8, "learning_rate": 5e-4})
    text = str(err.value)
    for change in ("num_epochs: 1 -> 2", "effective_batch_size: 16 -> 8", "learning_rate: 0.001 -> 0.0005"):
        assert change in text, text
    assert "new ckpt_output_dir" in text and 'settings_changed = "continue"' in text
    assert sorted(p.name for p in __import__("pathlib").Path(trained["ckpt_output_dir"]).rglob("*")) == before


def test_new_data_content_is_a_change(trained, tmp_path):
    data = write_jsonl(tmp_path / "other.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}] * 40)
    with pytest.raises(ValueError, match="data:"):
        prepare(**{**trained, "data_path": str(data)})


def test_free_settings_may_change_and_continue_is_explicit(trained, tmp_path):
    prepare(**{**trained, "save_samples": 64, "data_process_num_cpu_procs": 1, "data_output_dir": str(tmp_path)})
    prepare(**{**trained, "num_epochs": 3, "settings_changed": "continue"})


def test_cli_refuses_the_changed_rerun_on_dry_run(trained, tmp_path):
    from click.testing import CliRunner

    from hpc_sft.cli import main

    recipe = tmp_path / "recipe.toml"
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in trained.items())
    recipe.write_text("[sft]\n" + body.replace("num_epochs = 1", "num_epochs = 4"))
    res = CliRunner().invoke(main, ["submit", str(recipe), "--dry-run"])
    assert res.exit_code == 2 and "num_epochs: 1 -> 4" in res.output and "Traceback" not in res.output, res.output
