"""CLI behaviour with click's runner: dry-run, render, init, errors as one line with an exit code."""
import subprocess
import sys
import tomllib

import pytest
from click.testing import CliRunner

from hpc_sft.cli import main
from tests.helpers import write_jsonl

MSG = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.fixture
def recipe(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    write_jsonl(tmp_path / "train.jsonl", [MSG] * 3)
    path = tmp_path / "recipe.toml"
    path.write_text('executor = "slurm"\n[sft]\nmodel_path = "./model"\ndata_path = "train.jsonl"\n'
                    'ckpt_output_dir = "ckpt"\nnum_epochs = 2\neffective_batch_size = 8\nlearning_rate = 1e-4\n'
                    'max_seq_len = 256\nmax_tokens_per_gpu = 2048\ndevice = "cpu"\n'
                    '[slurm]\nnodes = 2\ntime = "00:30:00"\nsignal_lead_s = 60\nsetup = ["export A=1"]\n')
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_dry_run_prints_script_and_node_plan(recipe, tmp_path):
    res = invoke("submit", recipe, "--dry-run")
    assert res.exit_code == 0, res.output
    assert "#SBATCH --nodes=2" in res.output and "#SBATCH --requeue" in res.output
    assert "#SBATCH --signal=USR2@60" in res.output and "#SBATCH --ntasks-per-node=1" in res.output
    assert "export A=1" in res.output and "submitit.core._submit" in res.output
    assert f"{tmp_path}/ckpt/slurm/%j" in res.output  # relative paths resolved against the recipe folder
    assert '"node_rank": 1' in res.output and '"rdzv_id": "$SLURM_JOB_ID"' in res.output


def test_set_overrides(recipe):
    res = invoke("submit", recipe, "--dry-run", "--set", "slurm.nodes=3", "--set", "slurm.partition=high")
    assert res.exit_code == 0, res.output
    assert "#SBATCH --nodes=3" in res.output and "#SBATCH --partition=high" in res.output


def test_error_is_one_line_with_file_line_and_fix(recipe):
    res = invoke("submit", recipe, "--dry-run", "--set", "sft.num_epochs=0")
    assert res.exit_code == 2
    assert f"{recipe}:6: num_epochs: must be > 0, got 0. Fix:" in res.output
    assert "Traceback" not in res.output


def test_render_is_valid_bash(recipe, tmp_path):
    out = tmp_path / "job.sbatch"
    res = invoke("render", recipe, "-o", out)
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "#SBATCH --nodes=2" in text and "-m hpc_sft.executors.slurm.node_main" in text
    subprocess.run(["bash", "-n", str(out)], check=True)


def test_init_writes_a_parseable_recipe_and_never_overwrites(tmp_path):
    path = tmp_path / "new.toml"
    assert invoke("init", path).exit_code == 0
    data = tomllib.loads(path.read_text())
    assert data["executor"] == "slurm" and data["slurm"]["nodes"] == 1
    before = path.read_text()
    res = invoke("init", path)
    assert res.exit_code != 0 and "not overwriting" in res.output and path.read_text() == before


def test_login_commands_do_not_import_training_libraries(recipe):
    code = ("import sys; from click.testing import CliRunner; from hpc_sft.cli import main; "
            f"r = CliRunner().invoke(main, ['submit', {str(recipe)!r}, '--dry-run']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'instructlab', 'matplotlib')]; "
            "print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_hpc_sft_stays_light():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hpc_sft"], capture_output=True,
                         text=True, check=True).stderr
    modules = {line.split("|")[-1].strip().split(".")[0] for line in out.splitlines() if "|" in line}
    assert modules.isdisjoint({"torch", "transformers", "instructlab", "submitit", "datasets"}), modules
