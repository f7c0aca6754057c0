"""model_path as a Hugging Face model id: resolved through a real cache layout before queueing, offline nodes."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_sft.rundir.layout import SETTINGS_FILE
from tests.helpers import MSG, cli, tiny_sft_kwargs
from tests.loading import assert_loads_as_trained, newest_full_state

MODEL_ID = "hpc-sft/tiny-llama"


def build_cache(home: Path, model_id: str, model_dir: Path) -> Path:
    """The layout huggingface_hub writes: hub/models--ORG--NAME/ with blobs/SHA256, snapshots/COMMIT/FILE as
    relative links to the blobs, and refs/main naming the commit. Returns the snapshot directory."""
    repo = home / "hub" / f"models--{model_id.replace('/', '--')}"
    commit = hashlib.sha1(model_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for source in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, blob)
        link = snapshot / source.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hf_home(tmp_path, tiny_model):
    """An HF_HOME whose cache holds the tiny model under MODEL_ID; (env for child processes, snapshot)."""
    home = tmp_path / "hf_home"
    snapshot = build_cache(home, MODEL_ID, tiny_model)
    return {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}, snapshot


def recipe(tmp_path: Path, model: str, executor: str, data: Path | None = None) -> Path:
    if data is None:
        data = tmp_path / "train.jsonl"
        data.write_text(json.dumps(MSG) + "\n")
    kw = tiny_sft_kwargs(Path(model), data, tmp_path / "ckpt")
    sft = "".join(f"{k} = {json.dumps(v)}\n" for k, v in kw.items() if not isinstance(v, dict))
    slurm = '[slurm]\nnodes = 1\ntime = "00:30:00"\n' if executor == "slurm" else ""
    path = tmp_path / "recipe.toml"
    path.write_text(f'executor = "{executor}"\n[sft]\n{sft}{slurm}')
    return path


def test_the_built_cache_is_one_transformers_reads_offline(hf_home):
    env, snapshot = hf_home
    code = f"from transformers import AutoConfig; print(AutoConfig.from_pretrained({MODEL_ID!r}).model_type)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "llama", out.stderr[-2000:]


def test_a_cached_id_is_planned_as_its_snapshot(hf_home, tmp_path):
    env, snapshot = hf_home
    out = cli("submit", recipe(tmp_path, MODEL_ID, "slurm"), "--dry-run", env=env)
    assert out.returncode == 0, out.stderr
    assert f"model_path hub id resolved in the local Hugging Face cache: {MODEL_ID} -> {snapshot}" in out.stdout
    assert "torch" not in out.stderr


def test_an_uncached_id_is_refused_before_queueing_with_the_command_that_fetches_it(hf_home, tmp_path):
    env, _ = hf_home
    path = recipe(tmp_path, "nobody/absent-model", "slurm")
    refused = cli("submit", path, env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "model_path: 'nobody/absent-model' is a Hugging Face model id that is not in the local cache" \
        in refused.stderr
    assert f"HF_HOME={env['HF_HOME']} hpc-sft fetch nobody/absent-model" in refused.stderr
    assert not (tmp_path / "ckpt").exists(), "nothing may be written for a refused submit"
    dry = cli("submit", path, "--dry-run", env=env)
    assert dry.returncode == 0 and "(submit refuses this)" in dry.stdout + dry.stderr, dry.stderr


@pytest.mark.training
def test_a_local_run_trains_from_the_cached_snapshot_offline(hf_home, tmp_path, tiny_model, tiny_data):
    env, snapshot = hf_home
    run = subprocess.run([sys.executable, "-m", "hpc_sft.cli", "submit", str(recipe(tmp_path, MODEL_ID, "local",
                          tiny_data))], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    settings = json.loads((tmp_path / "ckpt" / SETTINGS_FILE).read_text())
    assert str(snapshot) in json.dumps(settings)
    final = next((tmp_path / "ckpt" / "hf_format").glob("samples_*"))
    assert_loads_as_trained(final, newest_full_state(tmp_path / "ckpt"), tiny_model)


def test_fetch_prints_the_cached_snapshot_and_fails_in_one_line_without_network(hf_home):
    env, snapshot = hf_home
    got = cli("fetch", MODEL_ID, env=env)  # offline: the cached snapshot is the answer
    assert got.returncode == 0 and got.stdout.strip() == str(snapshot), got.stderr
    online = {**env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2",
              "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    failed = cli("fetch", "nobody/absent-model", env=online)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr
    assert "could not download nobody/absent-model" in failed.stderr and "network" in failed.stderr
