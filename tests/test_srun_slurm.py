"""executor='srun' inside a real allocation (salloc -N2): one step, interrupted, run again, bit-identical."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_sft.rundir.status import read_status
from tests.helpers import cli
from tests.loading import assert_loads_as_trained, newest_full_state
from tests.slurm_helpers import kwargs_for, samples_now, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.training]


def srun_recipe(tmp_path: Path, tiny_model, data, ckpt: Path) -> Path:
    kw = kwargs_for(tiny_model, data, ckpt)
    sft = "".join(f"{k} = {json.dumps(v)}\n" for k, v in kw.items())
    path = tmp_path / "recipe.toml"
    path.write_text(f'executor = "srun"\n[sft]\n{sft}')
    return path


def in_allocation(recipe: Path, pid_file: Path) -> subprocess.Popen:
    """`salloc -N2` running `hpc-sft submit RECIPE` in the allocation's shell, as a user would type it; the
    hpc-sft process writes its pid (exec keeps it) so that the test can press Ctrl-C on it alone."""
    shell = f"echo $$ > {pid_file}; exec {sys.executable} -m hpc_sft.cli submit {recipe}"
    return subprocess.Popen(["salloc", "-N2", "-p", "main", "-t", "20", "bash", "-c", shell],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_outside_an_allocation_it_is_one_clear_error(slurm_cluster, tiny_model, data_1200, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_JOB")}
    out = cli("submit", srun_recipe(tmp_path, tiny_model, data_1200, tmp_path / "ckpt"), env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "executor: is 'srun', but this shell is not inside a Slurm allocation" in out.stderr
    assert "salloc -N2" in out.stderr and not (tmp_path / "ckpt").exists()


def test_interrupted_in_an_allocation_then_run_again_resumes_bit_identical(slurm_cluster, tiny_model, data_1200,
                                                                           reference_1200, tmp_path):
    ckpt, pid_file = tmp_path / "ckpt", tmp_path / "pid"
    recipe = srun_recipe(tmp_path, tiny_model, data_1200, ckpt)
    first = in_allocation(recipe, pid_file)
    wait_until(lambda: samples_now(ckpt) >= 300 or first.poll() is not None, 300, "training under way")
    os.kill(int(pid_file.read_text()), signal.SIGINT)  # Ctrl-C on hpc-sft in the allocation's shell
    out, err = first.communicate(timeout=300)
    assert first.returncode == 130, out[-2000:] + err[-3000:]
    assert "Traceback" not in err and "run the same command again" in err, err[-3000:]
    stop = read_status(ckpt)["stops"][-1]
    assert stop["action"] == "stop" and 300 <= stop["samples_seen"] < 2400, stop
    steps = sorted(p.name for p in (ckpt / "slurm").glob("srun_*_0.out"))
    assert len(steps) == 1, steps  # node 0's log of the one step

    again = in_allocation(recipe, pid_file)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, out[-2000:] + err[-3000:]
    final = ckpt / "hf_format" / "samples_2400"
    assert (final / "model.safetensors").read_bytes() == \
        (reference_1200.checkpoint_path / "model.safetensors").read_bytes()
    assert_loads_as_trained(final, newest_full_state(ckpt), tiny_model)
    assert [s["action"] for s in read_status(ckpt)["stops"]] == ["stop", "finish"]
