"""Shared fixtures: small input files, the locally built tiny model, and the real Slurm cluster."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import CACHE, REPO, write_jsonl
from tests.slurm_helpers import slurm_env_file


def pytest_collection_modifyitems(config, items):
    """HPC_SFT_TEST_SHARD=a|b: only this shard's tests (scripts/test.sh runs both at once; tests/shards.py)."""
    shard = os.environ.get("HPC_SFT_TEST_SHARD")
    if not shard:
        return
    from tests.shards import in_shard

    keep = [item for item in items if in_shard(shard, item.nodeid, "slurm_cluster" in item.fixturenames)]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A directory that passes the model_path existence check (not loadable: validation tests only)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    msg = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    return write_jsonl(tmp_path / "train.jsonl", [msg, msg])


@pytest.fixture
def base_kwargs(model_dir: Path, data_file: Path, tmp_path: Path) -> dict:
    return dict(model_path=str(model_dir), data_path=str(data_file), ckpt_output_dir=str(tmp_path / "ckpt"),
                num_epochs=1, effective_batch_size=4, learning_rate=1e-4, max_seq_len=128,
                max_tokens_per_gpu=1000)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The locally built tiny Llama + tokenizer (cached across sessions under .cache/tests)."""
    from hpc_sft.tiny import build_tiny_model

    return build_tiny_model(CACHE / "tiny-model")


@pytest.fixture(scope="session")
def tiny_data() -> Path:
    from hpc_sft.tiny import write_tiny_dataset

    CACHE.mkdir(parents=True, exist_ok=True)
    return write_tiny_dataset(CACHE / "tiny-256.jsonl", n=256)


@pytest.fixture(autouse=True, scope="session")
def _offline_hf_cache(tmp_path_factory):
    """Keep the datasets cache out of ~/.cache and never reach for a hub."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture
def one_thread():
    """This 2-core machine runs the tiny model ~10x faster single-threaded (oversubscription otherwise)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_data(tiny_data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny-64.jsonl"
    path.write_text("".join(Path(tiny_data).read_text().splitlines(keepends=True)[:64]))
    return path


@pytest.fixture(scope="session")
def data_1200(tmp_path_factory):
    from hpc_sft.tiny import write_tiny_dataset

    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "train-1200.jsonl", n=1200)


@pytest.fixture(scope="session")
def reference_1200(tiny_model, data_1200, tmp_path_factory):
    """Uninterrupted local run on data_1200 (2 epochs), same seed, world size 2 as the 2-node Slurm runs: what
    every interrupted run must end bit-identical to."""
    import hpc_sft
    from tests.slurm_helpers import kwargs_for

    def run(folder: Path):
        return hpc_sft.sft(**kwargs_for(tiny_model, data_1200, folder / "ckpt"), nproc_per_node=2)

    shared = os.environ.get("HPC_SFT_TEST_SHARED_DIR")
    if not shared:
        return run(tmp_path_factory.mktemp("reference"))
    return once_for_all_shards(Path(shared) / "reference_1200", run)


def once_for_all_shards(folder: Path, make):
    """make(folder)'s result, computed by the first of scripts/test.sh's shards that asks (the others wait for it
    and read it back): the same run in every shard, of this checkout, made once in this suite run."""
    import fcntl
    import pickle
    import shutil

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / "result.pickle"
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a failed try of another shard: start afresh
            folder.mkdir()
            result = make(folder)
            (folder / "result.tmp").write_bytes(pickle.dumps(result))
            (folder / "result.tmp").rename(done)
        return pickle.loads(done.read_bytes())


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real 4-node Slurm cluster from slurm/cluster.sh (skipped, with the reason, where it cannot run).
    HPC_SFT_SLURM_VERSION=24.11 runs it on Debian trixie's Slurm 24.11 (`--slurm 24.11`; default 22.05)."""
    import subprocess

    script = REPO / "slurm" / "cluster.sh"
    version = os.environ.get("HPC_SFT_SLURM_VERSION") or "22.05"
    flag = [] if version == "22.05" else ["--slurm", version]
    can = subprocess.run([str(script), "can-run", *flag], capture_output=True, text=True)
    if can.returncode != 0:
        pytest.skip(f"real Slurm cluster cannot run on this machine: {(can.stdout + can.stderr).strip()}")
    if flag:
        # Builds the trixie root filesystem the first time (~1 min, needs Debian's package registry).
        inst = subprocess.run([str(script), "install", *flag], capture_output=True, text=True, timeout=1500)
        if inst.returncode != 0:
            tail = "\n".join((inst.stdout + inst.stderr).strip().splitlines()[-5:])
            pytest.skip(f"Slurm {version} root filesystem cannot be built (slurm/cluster.sh install {' '.join(flag)}):"
                        f"\n{tail}")
    else:
        subprocess.run([str(script), "install"], check=True, capture_output=True)
    # Jobs of the 24.11 cluster run chrooted: they must see this Python, its venv and the temp folder there.
    share = {sys.prefix, os.path.realpath(sys.base_prefix), tempfile.gettempdir()}
    env = {**os.environ, "HPC_SFT_SLURM_SHARE": ":".join(sorted(share))}
    up = subprocess.run([str(script), "up", "--nodes", "4", *flag], capture_output=True, text=True, timeout=300,
                        env=env)
    if flag and "cannot share" in up.stderr:
        pytest.skip(f"Slurm {version} cluster cannot run this Python: {up.stderr.strip().splitlines()[-1]}")
    assert up.returncode == 0, f"slurm/cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
    env = slurm_env_file(Path(up.stdout.strip().splitlines()[-1]))
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    mp.setenv("HPC_SFT_HOME", str(tmp_path_factory.mktemp("hpc_sft_home")))
    yield env
    mp.undo()
    if not os.environ.get("HPC_SFT_KEEP_CLUSTER"):
        subprocess.run([str(script), "down"], capture_output=True, timeout=120)
