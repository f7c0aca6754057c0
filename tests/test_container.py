"""slurm.container: validation, the pure wrapping, golden dry-run/render lines, and a real CPU training run through
a stand-in `apptainer` (tests/fixtures/container/apptainer) that really runs the command in another root: a mount
namespace, only the --bind paths, chroot into an image directory built here, only the --env variables."""
import ast
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpc_sft import SlurmOptions
from hpc_sft.cli import main
from hpc_sft.container import Container, Host, apptainer_env_arg, training_mounts, wrap
from hpc_sft.errors import ConfigError
from hpc_sft.launch import RESOLVER, WORKER_DIR
from tests.test_render import check_golden, make_recipe, normalise

FAKE_BIN = Path(__file__).parent / "fixtures" / "container"
VENV = Path(sys.prefix)
SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
CONTAINER = {"runtime": "apptainer", "image": "/shared/images/sft.sif", "mounts": ["/shared", "/scratch/data:/data"],
             "env": {"HF_HOME": "/shared/hf"}}


# ---- validation: errors name the key -------------------------------------------------------------------------

@pytest.mark.parametrize("value, key", [
    ({"runtime": "docker", "image": "x"}, "slurm.container.runtime"),
    ({"image": "x"}, "slurm.container.runtime"),
    ({"runtime": "pyxis"}, "slurm.container.image"),
    ({"runtime": "pyxis", "image": "x", "mount": ["/a"]}, "slurm.container.mount"),
    ({"runtime": "pyxis", "image": "x", "mounts": ["data"]}, "slurm.container.mounts"),
    ({"runtime": "pyxis", "image": "x", "mounts": ["/a:/b:/c"]}, "slurm.container.mounts"),
    ({"runtime": "pyxis", "image": "x", "mounts": "/a"}, "slurm.container.mounts"),
    ({"runtime": "pyxis", "image": "x", "env": {"PATH": "/x"}}, "slurm.container.env.PATH"),
    ({"runtime": "pyxis", "image": "x", "env": {"A": 1}}, "slurm.container.env.A"),
    ("apptainer", "slurm.container"),
])
def test_bad_container_names_the_key(value, key):
    with pytest.raises(ConfigError) as err:
        SlurmOptions.from_value({"container": value})
    assert err.value.key == key


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="slurm.container.env, slurm.container.image, slurm.container.mounts, "
                                          "slurm.container.runtime"):
        SlurmOptions.from_value({"container": {"runtime": "pyxis", "image": "x", "imagee": "y"}})


def test_container_is_frozen_and_survives_json():
    import dataclasses

    opts = SlurmOptions.from_value({"container": CONTAINER})
    assert opts.container == Container("apptainer", "/shared/images/sft.sif", ("/shared", "/scratch/data:/data"),
                                       (("HF_HOME", "/shared/hf"),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.container.image = "other"
    assert SlurmOptions(container=CONTAINER).container == opts.container  # a table given to the class too
    from hpc_sft.serialize import from_dict, to_dict

    data = json.loads(json.dumps(dataclasses.asdict(opts)))  # as config.json / the trl launch file hold it
    back = SlurmOptions(**{**data, "setup": tuple(data["setup"])})
    assert back == opts and isinstance(back.container, Container)


# ---- the pure wrapping ---------------------------------------------------------------------------------------

HOST = Host(executable="/home/u/venv/bin/python", import_roots=("/home/u/venv/lib/python3.11/site-packages",
            "/home/u/src"), hostname="gpu-07", resolver="/home/u/src/hpc_sft/_worker/hpc_sft_exec.py",
            base_env={"PATH": "/home/u/venv/bin:/usr/bin", "HOME": "/home/u", "SECRET_TOKEN": "s",
                      "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "0,1", "LD_LIBRARY_PATH": "/opt/cuda/lib"})
ILT = ["torchrun", "--nproc-per-node=2", "--nnodes=1", "/home/u/venv/lib/python3.11/site-packages/instructlab/"
       "training/main_ds.py", "--output_dir=/shared/ckpt"]
LAUNCH_ENV = {**HOST.base_env, "PATH": "/home/u/venv/bin:/home/u/venv/bin:/usr/bin",
              "PYTHONPATH": "/home/u/src/hpc_sft/_worker:/home/u/src", "HPC_SFT_SHIELD_SIGNALS": "USR1,USR2,INT",
              "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "4", "HPC_SFT_CONTAINER": "{}"}
MOUNTS = ("/home/u/src/hpc_sft/_worker", "/shared/ckpt")


def test_apptainer_wrapping():
    c = Container("apptainer", "/img.sif", ("/scratch:/data",), (("HF_HOME", "/shared/hf"),))
    argv, env = wrap(c, ILT, LAUNCH_ENV, MOUNTS, HOST, gpu=True)
    assert argv[:4] == ["apptainer", "exec", "--cleanenv", "--nv"]
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert binds == ["/dev/shm:/dev/shm", "/home/u/src/hpc_sft/_worker:/home/u/src/hpc_sft/_worker",
                     "/shared/ckpt:/shared/ckpt", "/scratch:/data"]
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert envs == ["ACCELERATE_USE_CPU=1", '"CUDA_VISIBLE_DEVICES=0,1"', "HF_HOME=/shared/hf", "HF_HUB_OFFLINE=1",
                    '"HPC_SFT_SHIELD_SIGNALS=USR1,USR2,INT"', "OMP_NUM_THREADS=4",
                    "PYTHONPATH=/home/u/src/hpc_sft/_worker"]  # no PATH, LD_LIBRARY_PATH, HOME, secrets
    image = argv.index("/img.sif")
    # the host's main_ds.py path means nothing inside: found again by module name through the resolver
    assert argv[image + 1:] == ["python3", HOST.resolver, "3", "instructlab.training.main_ds", *ILT]
    assert "HPC_SFT_CONTAINER" not in env and env["PATH"] == LAUNCH_ENV["PATH"]


def test_pyxis_wrapping_runs_a_step_on_this_node():
    c = Container("pyxis", "/shared/sft.sqsh", (), (("HF_HOME", "/shared/hf"),))
    command = ["/home/u/venv/bin/python", "-u", "-m", "hpc_sft.in_image", "process-data", "/shared/ckpt/x", "{}"]
    argv, env = wrap(c, command, LAUNCH_ENV, MOUNTS, HOST)
    assert argv[:13] == ["srun", "--overlap", "--nodes=1", "--ntasks=1", "-w", "gpu-07", "--kill-on-bad-exit=1",
                         "--container-image=/shared/sft.sqsh",
                         "--container-mounts=/dev/shm:/dev/shm,/home/u/src/hpc_sft/_worker:/home/u/src/hpc_sft/"
                         "_worker,/shared/ckpt:/shared/ckpt",
                         "--container-env=ACCELERATE_USE_CPU,CUDA_VISIBLE_DEVICES,HF_HOME,HF_HUB_OFFLINE,"
                         "HPC_SFT_SHIELD_SIGNALS,OMP_NUM_THREADS,PYTHONPATH", "python3", "-u", "-m"]
    assert env["PYTHONPATH"] == "/home/u/src/hpc_sft/_worker" and env["HF_HOME"] == "/shared/hf"
    assert env["PATH"] == LAUNCH_ENV["PATH"]  # srun itself runs on the host


def test_apptainer_env_is_csv():
    assert apptainer_env_arg("A", "x") == "A=x"
    assert apptainer_env_arg("A", 'x,"y"') == '"A=x,""y"""'


def test_training_mounts_follow_symlinks_out_of_the_model(tmp_path):
    blobs, snap = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "abc"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (blobs / "h1").write_text("{}")
    (snap / "config.json").symlink_to(blobs / "h1")

    class Cfg:
        ckpt_output_dir, data_output_dir, model_path = str(tmp_path / "ckpt"), None, str(snap)
        data_path = str(tmp_path / "ckpt" / "train.jsonl")  # under ckpt: covered by it

    assert training_mounts(Cfg, "/w") == ("/w", str(tmp_path / "ckpt"), str(snap), str(blobs))


# ---- dry run and render show the container lines -------------------------------------------------------------

@pytest.mark.parametrize("runtime", ["apptainer", "pyxis"])
def test_golden_dry_run_and_render_with_container(tmp_path, runtime):
    folder = tmp_path / "recipes"
    recipe = make_recipe(folder, "train")
    image = "/shared/images/sft.sif" if runtime == "apptainer" else "/shared/images/sft.sqsh"
    recipe.write_text(recipe.read_text() + f'[slurm.container]\nruntime = "{runtime}"\nimage = "{image}"\n'
                      'mounts = ["/shared", "/scratch/data:/data"]\nenv = { HF_HOME = "/shared/hf", '
                      'NCCL_DEBUG = "INFO,WARN" }\n')
    rendered = CliRunner().invoke(main, ["render", str(recipe)])
    assert rendered.exit_code == 0, rendered.output
    text = normalise(rendered.output, folder).replace(str(WORKER_DIR), "<WORKER_DIR>")
    head, _, rest = text.partition("<<'HPC_SFT_CONFIG'\n")  # the config itself: tests/golden/render.sbatch
    check_golden(f"render-{runtime}.sbatch", head + "<<'HPC_SFT_CONFIG'\n" + rest.split("\n", 1)[1])
    (tmp_path / "job.sbatch").write_text(rendered.output)
    subprocess.run(["bash", "-n", str(tmp_path / "job.sbatch")], check=True)
    dry = CliRunner().invoke(main, ["submit", str(recipe), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    check_golden(f"dry-run-{runtime}.txt", normalise(dry.output, folder).replace(str(WORKER_DIR), "<WORKER_DIR>"))
    (tmp_path / "dry.sbatch").write_text(dry.output.split("# per-node launch plan")[0])
    subprocess.run(["bash", "-n", str(tmp_path / "dry.sbatch")], check=True)


# ---- a real CPU training through the stand-in runtime --------------------------------------------------------

PROBE = ('import os, sys; d = os.environ.get("IMAGE_PROBE_DIR"); d and open(os.path.join(d, str(os.getpid())), '
         '"w").write(repr((sys.prefix, sys.executable, sys.argv)))\n')


def link_tree(src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", src, str(dst)], check=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """An image directory: the system's /usr and /etc, this venv's Python install and a copy of the venv at
    /opt/venv (not the host's path) with hpc-sft installed into it (the host's install is editable), and no
    Slurm commands. Hard links: ~10 s, no extra disk."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (mount namespaces) for the stand-in container runtime")
    root = tmp_path_factory.mktemp("image")
    for top in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{top}"):
            os.symlink(os.readlink(f"/{top}"), root / top)
        elif os.path.isdir(f"/{top}"):
            link_tree(f"/{top}", root / top)
    for part in ("etc", "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/libexec", "usr/local", "usr/share/zoneinfo"):
        if os.path.isdir(f"/{part}"):
            link_tree(f"/{part}", root / part)
    cfg = dict(line.split(" = ", 1) for line in (VENV / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    python_home = str(Path(cfg["home"]).parent)
    link_tree(python_home, root / python_home.lstrip("/"))
    venv = root / "opt" / "venv"
    link_tree(str(VENV), venv)
    site = venv / SITE
    for path in list(site.glob("*editable*")) + [site / "hpc_sft"]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "hpc_sft", site / "hpc_sft", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo / "templates", site / "hpc_sft" / "templates")
    (site / "zz_image_probe.pth").write_text(PROBE)
    for script in (venv / "bin").iterdir():  # console scripts name the venv's own python: point them at /opt/venv
        if script.is_file() and not script.is_symlink() and script.read_bytes()[:2] == b"#!":
            text = script.read_bytes().replace(str(VENV).encode(), b"/opt/venv")
            script.unlink()  # a hard link: replace, never write through
            script.write_bytes(text)
            script.chmod(0o755)
    for name in ("scontrol", "sbatch", "srun", "scancel", "sacct", "sinfo", "squeue"):
        (root / "usr" / "bin" / name).unlink(missing_ok=True)
    (root / "tmp").mkdir(mode=0o1777)
    (root / "root").mkdir(exist_ok=True)
    assert not (root / str(VENV).lstrip("/")).exists()  # the host's interpreter path does not exist inside
    return root


def run_node_task(config, folder: Path, env_extra: dict) -> subprocess.CompletedProcess:
    """The Slurm node task as each node runs it (node_main), one node; the SLURM_* of an allocation are the
    stand-in, the container runtime is the fake one first on PATH."""
    from hpc_sft.serialize import to_dict

    cfg = folder / "config.json"
    cfg.write_text(json.dumps(to_dict(config)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "SUBMITIT"))}
    env.update({"PATH": f"{FAKE_BIN}:{env['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST":
                socket.gethostname(), "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_CPUS_ON_NODE": "2",
                **env_extra})
    return subprocess.run([sys.executable, "-u", "-m", "hpc_sft.executors.slurm.node_main", str(cfg)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.training
def test_training_runs_inside_the_image(image, tiny_model, small_data, tmp_path):
    from hpc_sft.pipeline import validate
    from hpc_sft.tiny import fast_cpu_kwargs
    from tests.loading import assert_loads_as_trained, newest_full_state

    work = tmp_path / "work"  # not under anything the runtime mounts by itself
    probe, ckpt = work / "probe", work / "ckpt"
    probe.mkdir(parents=True)
    data = shutil.copy(small_data, work / "train.jsonl")
    config = validate({**fast_cpu_kwargs(tiny_model, data, ckpt), "executor": "slurm",
                       "slurm": {"container": {"runtime": "apptainer", "image": str(image), "mounts": [str(probe)],
                                               "env": {"IMAGE_PROBE_DIR": str(probe)}}}})
    calls = tmp_path / "apptainer-calls"
    done = run_node_task(config, work, {"FAKE_APPTAINER_LOG": str(calls)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "hpc-sft: finished:" in done.stdout
    # what ran inside: tokenization (hpc-sft's entry point) and torchrun with its workers, all the image's python
    runs = [ast.literal_eval(line) for line in calls.read_text().splitlines()]
    inner = [argv[argv.index(str(image)) + 1:] for argv in runs]
    assert inner[0][:4] == ["python3", "-u", "-m", "hpc_sft.in_image"], inner
    assert inner[1][:4] == ["python3", str(RESOLVER), inner[1][2], "instructlab.training.main_ds"], inner
    seen = [ast.literal_eval(p.read_text()) for p in probe.iterdir()]
    assert seen and all(prefix == "/opt/venv" for prefix, _exe, _argv in seen), seen
    workers = [argv for _p, _e, argv in seen if argv[0].endswith("/instructlab/training/main_ds.py")]
    assert len(workers) == 1 and workers[0][0].startswith("/opt/venv/"), seen  # the image's own main_ds.py
    final = sorted((ckpt / "hf_format").glob("samples_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    assert_loads_as_trained(final, newest_full_state(ckpt), base_model=tiny_model)


@pytest.mark.training
def test_a_missing_mount_fails_inside_the_image(image, tmp_path):
    """The stand-in is strict: a path the launch forgot to mount is not there inside (so the run above proves
    the mounts), and neither is the host's scontrol."""
    for name in ("scontrol", "srun", "sbatch"):
        assert not (image / "usr" / "bin" / name).exists()
    outside = tmp_path / "not-mounted"
    outside.mkdir()
    (outside / "f").write_text("x")
    (tmp_path / "m").mkdir()
    probe = subprocess.run([str(FAKE_BIN / "apptainer"), "exec", "--cleanenv", "--bind", str(tmp_path / "m"),
                            "--env", "A=1", str(image), "sh", "-c", f'test -e {outside}/f; echo "$? $A $PATH"; '
                            "command -v scontrol"], capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "scontrol" not in probe.stdout, probe.stdout + probe.stderr  # not found
    assert probe.stdout.splitlines()[0] == "1 1 /opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
