"""Rendered scripts: golden files, `bash -n`, and hostile values that must run nothing unintended."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpc_sft.cli import main
from tests.helpers import write_jsonl

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("HPC_SFT_REGEN_GOLDEN") == "1"  # regenerate: HPC_SFT_REGEN_GOLDEN=1 pytest tests/test_render.py
MSG = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
HOSTILE = "we'ird \"dir\" $(touch PWNED1) `touch PWNED2`; touch PWNED3 & x"


def make_recipe(folder: Path, name: str = HOSTILE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model").mkdir(exist_ok=True)
    (folder / "model" / "config.json").write_text("{}")
    (folder / "model" / "tokenizer_config.json").write_text("{}")
    write_jsonl(folder / f"{name}.jsonl", [MSG])
    recipe = folder / "recipe.toml"
    esc = name.replace("\\", "\\\\").replace('"', '\\"')
    recipe.write_text(
        'executor = "slurm"\n[sft]\nmodel_path = "./model"\n'
        f'data_path = "{esc}.jsonl"\nckpt_output_dir = "ckpt {esc}"\n'
        'num_epochs = 2\neffective_batch_size = 8\nlearning_rate = 1e-4\nmax_seq_len = 256\n'
        'max_tokens_per_gpu = 2048\ndevice = "cpu"\n'
        '[slurm]\nnodes = 2\ntime = "02:00:00"\nsignal_lead_s = 300\npartition = "main"\n'
        "setup = [\"export GREETING='hello; $(touch PWNED4)'\", \"echo setup-ran > setup.txt\"]\n"
        "additional = { comment = \"it's $(touch PWNED5)\" }\n")
    return recipe


def normalise(text: str, folder: Path) -> str:
    """Paths replaced; the dry run's '# check ...' lines dropped (they depend on whether a cluster answers)."""
    text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("# check "))
    return text.replace(str(folder), "<DIR>").replace(sys.executable, "<PYTHON>").replace(
        os.path.dirname(sys.executable), "<VENV_BIN>")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path}; regenerate with HPC_SFT_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"{name} changed; if intended, regenerate with HPC_SFT_REGEN_GOLDEN=1"


@pytest.fixture
def fixed_dir(tmp_path):
    """Golden files need a stable recipe folder name."""
    return tmp_path / "recipes"


def test_golden_render_and_dry_run(fixed_dir):
    recipe = make_recipe(fixed_dir, "train")
    rendered = CliRunner().invoke(main, ["render", str(recipe)])
    assert rendered.exit_code == 0, rendered.output
    check_golden("render.sbatch", normalise(rendered.output, fixed_dir))
    dry = CliRunner().invoke(main, ["submit", str(recipe), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    check_golden("dry-run.txt", normalise(dry.output, fixed_dir))


def test_hostile_values_run_nothing_unintended(tmp_path):
    recipe = make_recipe(tmp_path / "r")
    res = CliRunner().invoke(main, ["render", str(recipe), "-o", str(tmp_path / "job.sbatch")])
    assert res.exit_code == 0, res.output
    script = tmp_path / "job.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    dry = CliRunner().invoke(main, ["submit", str(recipe), "--dry-run"])
    (tmp_path / "dry.sbatch").write_text(dry.output.split("# per-node launch plan")[0])
    subprocess.run(["bash", "-n", str(tmp_path / "dry.sbatch")], check=True)
    # Execute the rendered script in a sandbox; srun is replaced at the process boundary by a recorder.
    sandbox = tmp_path / "sandbox"
    (sandbox / "bin").mkdir(parents=True)
    (sandbox / "bin" / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SANDBOX/srun-args"\n')
    (sandbox / "bin" / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{sandbox / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": "42",
           "SANDBOX": str(sandbox)}
    subprocess.run(["bash", str(script)], cwd=sandbox, env=env, check=True, timeout=30)
    planted = [p for p in tmp_path.rglob("PWNED*")] + [p for p in Path.cwd().glob("PWNED*")]
    assert planted == [], planted
    assert (sandbox / "setup.txt").read_text() == "setup-ran\n"  # the user's setup lines did run
    args = (sandbox / "srun-args").read_text().splitlines()
    config_path = Path(args[-1])
    assert args[-4:-1] == ["-u", "-m", "hpc_sft.executors.slurm.node_main"]
    config = json.loads(config_path.read_text())
    assert config["data_path"].endswith(f"{HOSTILE}.jsonl") and config["ckpt_output_dir"].endswith(f"ckpt {HOSTILE}")
    assert config_path.parent.name == "42"
