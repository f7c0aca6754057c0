"""The built wheel ships the templates and the worker shim, and renders from inside the installed package."""
import os
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "hatchling" in build.stderr and "No matching distribution" in build.stderr:
        pytest.skip("cannot fetch hatchling to build the wheel (no package index)")
    assert build.returncode == 0, build.stderr
    return next(out.glob("hpc_sft-*.whl"))


def test_wheel_contains_templates_and_shim(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("hpc_sft/templates/sbatch.sh.j2", "hpc_sft/templates/recipe.toml.j2",
                 "hpc_sft/_worker/sitecustomize.py", "hpc_sft/_worker/hpc_sft_shim/resume.py", "hpc_sft/cli.py"):
        assert name in names, name
    assert not any(n.startswith(("tests/", "slurm/")) for n in names)


def test_installed_wheel_renders_from_its_own_templates(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    code = ("from hpc_sft.templating import templates_dir; from hpc_sft.config.skeleton import recipe_text; "
            "d = templates_dir(); print(d); assert d.is_relative_to(%r), d; "
            "assert 'executor = \"slurm\"' in recipe_text('r.toml')" % str(target))
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_wheel_declares_the_trl_extra(wheel):
    """backend = "trl" imports trl and peft: they are declared, not left to arrive with instructlab-training."""
    archive = zipfile.ZipFile(wheel)
    meta = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "Provides-Extra: trl" in meta
    assert any(line.startswith("Requires-Dist: trl") and "extra == 'trl'" in line for line in meta.splitlines())
    assert any(line.startswith("Requires-Dist: peft") and "extra == 'trl'" in line for line in meta.splitlines())


def test_wheel_declares_matplotlib_only_in_the_plot_extra(wheel):
    """`hpc-sft plot` needs matplotlib; nothing else does, so it is no core dependency."""
    archive = zipfile.ZipFile(wheel)
    meta = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    lines = [line for line in meta.splitlines() if line.startswith("Requires-Dist: matplotlib")]
    assert "Provides-Extra: plot" in meta and lines and all("extra == 'plot'" in line for line in lines), lines
