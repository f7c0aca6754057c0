"""sft(executor='slurm') on the real multi-node Slurm cluster from slurm/: rendezvous, training, data once."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

import hpc_sft
from hpc_sft.backends.instructlab.backend import InstructLabTrainingSFTBackend
from hpc_sft.config.validate import build_config, split_values
from hpc_sft.executors.slurm.env import SlurmEnv, rendezvous
from hpc_sft.executors.slurm.node_task import PLAN_TAG, cpu_threads, plan_record, prepare_data, slurm_launch
from hpc_sft.executors.slurm.watchdog import MARK
from hpc_sft.launch import finalize
from hpc_sft.rundir.layout import LOCK_FILE
from hpc_sft.rundir.status import read_status
from tests.helpers import tiny_sft_kwargs
from tests.loading import assert_loads_as_trained, newest_full_state

pytestmark = [pytest.mark.slurm, pytest.mark.training]


def node_plans(job):
    """The plan record each node logged, by node rank."""
    plans = {}
    for path in job.stdout_paths:
        for line in path.read_text().splitlines():
            if line.startswith(PLAN_TAG):
                rec = json.loads(line[len(PLAN_TAG):])
                plans[rec["node_rank"]] = rec
    return plans


def job_nodelist(job_id):
    out = subprocess.run(["sacct", "-j", str(job_id), "-X", "-n", "-P", "-o", "NodeList"], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def submit(tiny_model, tiny_data, ckpt, nodes, data_dir, slurm_over=None, **over):
    kwargs = tiny_sft_kwargs(tiny_model, tiny_data, ckpt, data_output_dir=str(data_dir), **over)
    slurm = {"nodes": nodes, "time": "00:30:00", "signal_lead_s": 60, "partition": "main", **(slurm_over or {})}
    return hpc_sft.sft(**kwargs, executor="slurm", slurm=slurm)


def test_a_job_runs_this_checkout_with_this_python(slurm_cluster, tmp_path):
    """Wherever the checkout and its venv lie (CI clones elsewhere than /work), a job on the cluster imports this
    checkout's hpc_sft with this Python: on 24.11 jobs run chrooted, so cluster.sh must share those folders."""
    out = tmp_path / "where.txt"
    code = "import sys, hpc_sft; print(hpc_sft.__file__); print(sys.prefix)"
    job = subprocess.run(["sbatch", "--wait", "-N1", "-p", "main", "-t", "2", f"--output={out}",
                          f"--wrap={sys.executable} -c '{code}'"], capture_output=True, text=True, timeout=120)
    seen = out.read_text() if out.exists() else ""
    assert job.returncode == 0, f"sbatch --wait exit {job.returncode}: {job.stderr}{seen}"
    assert seen.split() == [hpc_sft.__file__, sys.prefix]


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    return tmp_path_factory.mktemp("shared-data")


def test_two_nodes_train_as_one_world(slurm_cluster, tiny_model, tiny_data, tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("HPC_SFT_PARAM_DIGEST_DIR", str(tmp_path / "digests"))  # exported to the job by sbatch
    job = submit(tiny_model, tiny_data, tmp_path / "ckpt", 2, shared_data)
    result = job.wait(timeout_s=420)
    assert result.samples_seen == 256 and result.restarts == 0
    assert result.checkpoint_path == tmp_path / "ckpt" / "hf_format" / "samples_256"
    plans = node_plans(job)
    assert [plans[r]["host"] for r in (0, 1)] == ["node1", "node2"]
    assert plans[0]["rdzv_endpoint"] == plans[1]["rdzv_endpoint"] and plans[0]["rdzv_endpoint"].startswith("node1:")
    assert plans[0]["rdzv_id"] == job.job_id
    # by default a CPU process gets the CPUs Slurm gave the job on its node (1 here), not the machine's cores
    assert [plans[r]["threads"] for r in (0, 1)] == ["1", "1"]
    assert [plans[r]["hf_hub_offline"] for r in (0, 1)] == ["1", "1"]  # compute nodes never reach for the hub
    # each node ran its own torchrun; both ranks of one world of two trained
    for rank in (0, 1):
        log = (tmp_path / "ckpt" / f"full_logs_global{rank}.log").read_text()
        assert f"Rank: {rank}, loss =" in log
    digests = {p.name: json.loads(p.read_text()) for p in (tmp_path / "digests").glob("rank*.json")}
    assert {d["world_size"] for d in digests.values()} == {2} and len(digests) == 2
    assert digests["rank0.json"]["sha256"] == digests["rank1.json"]["sha256"]
    logs = [p.read_text() for p in job.stdout_paths]
    assert "processing data into" in logs[0] and "data cache ready" in logs[1]
    assert "processing data into" not in logs[1]
    # the user's default data processing ran: a pool of min(16, cpus) processes (deadlocked before the fix)
    err0 = job.stdout_paths[0].with_suffix(".err").read_text()
    assert len(os.sched_getaffinity(0)) < 2 or re.search(r"num_proc=([2-9]|1\d)\b", err0), err0[-2000:]
    assert_loads_as_trained(result.checkpoint_path, newest_full_state(tmp_path / "ckpt"), tiny_model)


# What a shell inside `salloc -N1 --mem-per-cpu=100` (or a batch script) has set. sbatch passes what the new job
# does not set itself into it: there SLURM_MEM_PER_CPU next to the job's own SLURM_MEM_PER_NODE (slurm.mem) makes
# srun stop with "SLURM_MEM_PER_CPU, SLURM_MEM_PER_GPU, and SLURM_MEM_PER_NODE are mutually exclusive"
OUTER_JOB = {"SLURM_JOB_ID": "424242", "SLURM_JOBID": "424242", "SLURM_CPUS_PER_TASK": "2",
             "SLURM_MEM_PER_CPU": "100", "SLURM_NTASKS": "1", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
             "SLURM_JOB_NODELIST": "outer[1-9]", "SLURMD_NODENAME": "outer1"}


def test_four_node_plan_matches_what_each_node_saw(slurm_cluster, tiny_model, tiny_data, tmp_path, shared_data,
                                                   monkeypatch):
    config = build_config(*split_values(
        {**tiny_sft_kwargs(tiny_model, tiny_data, tmp_path / "ckpt", data_output_dir=str(shared_data)),
         "executor": "slurm", "slurm": {"nodes": 4}}))
    prepare_data(config, InstructLabTrainingSFTBackend(), 0)  # the cache exists (built here if run alone)
    for key, value in OUTER_JOB.items():  # submitted from inside another job
        monkeypatch.setenv(key, value)
    job = submit(tiny_model, tiny_data, tmp_path / "ckpt", 4, shared_data, {"mem": "500M"})
    assert {k: os.environ.get(k) for k in OUTER_JOB} == OUTER_JOB  # the submitter's own environment is back
    for key in OUTER_JOB:
        monkeypatch.delenv(key)
    result = job.wait(timeout_s=600)
    assert result.samples_seen == 256
    seen = node_plans(job)
    nodelist = job_nodelist(job.job_id)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as every node task sets it
    for rank in range(4):
        env = SlurmEnv(job_id=job.job_id, nodelist=nodelist, nnodes=4, node_rank=rank, cpus_on_node=1)
        expected = plan_record(cpu_threads(finalize(slurm_launch(config, rendezvous(env))), env), f"node{rank + 1}")
        assert seen[rank] == expected
    # the data cache from the first job is reused: nobody tokenizes again
    logs = [p.read_text() for p in job.stdout_paths]
    assert "data cache hit" in logs[0] and all("processing data into" not in text for text in logs)


def test_rendered_standalone_script_trains_on_the_cluster(slurm_cluster, tiny_model, tiny_data, tmp_path):
    from click.testing import CliRunner

    from hpc_sft.cli import main
    from hpc_sft.executors.slurm.client import slurm_state

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'executor = "slurm"\n[sft]\nmodel_path = "{tiny_model}"\ndata_path = "{tiny_data}"\n'
                      'ckpt_output_dir = "ckpt"\nnum_epochs = 1\neffective_batch_size = 16\nlearning_rate = 1e-3\n'
                      'max_seq_len = 256\nmax_tokens_per_gpu = 4000\ndevice = "cpu"\n'
                      '[slurm]\nnodes = 2\ntime = "00:20:00"\nsignal_lead_s = 60\nsetup = ["export FROM_SETUP=1"]\n')
    script = tmp_path / "job.sbatch"
    assert CliRunner().invoke(main, ["render", str(recipe), "-o", str(script)]).exit_code == 0
    job_id = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, cwd=tmp_path,
                            check=True).stdout.strip()
    deadline = time.monotonic() + 420
    while slurm_state(job_id)["state"] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED"):
        assert time.monotonic() < deadline, "the rendered job did not finish"
        time.sleep(2)
    assert slurm_state(job_id)["state"] == "COMPLETED"
    ckpt = tmp_path / "ckpt"
    assert (ckpt / "hf_format" / "samples_256" / "model.safetensors").is_file()
    node0 = (ckpt / "slurm" / job_id / f"{job_id}_0_log.out").read_text()
    assert "hpc-sft: finished" in node0 and '"node_rank": 0' in node0
    assert '"node_rank": 1' in (ckpt / "slurm" / job_id / f"{job_id}_1_log.out").read_text()
    assert_loads_as_trained(ckpt / "hf_format" / "samples_256", newest_full_state(ckpt), tiny_model)


def test_node_0_failing_to_tokenize_stops_the_other_node_with_its_reason(slurm_cluster, tiny_model, tmp_path):
    """Every sample too long: instructlab-training's data processing fails on node 0 (a real failure that
    only the tokenizer can see). Node 1 must stop at once with that reason, not wait HPC_SFT_DATA_WAIT_S."""
    long = "apple river stone " * 200
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                      {"role": "assistant", "content": long}]}) + "\n"
                            for _ in range(40)))
    job = submit(tiny_model, data, tmp_path / "ckpt", 2, tmp_path / "data")
    with pytest.raises(hpc_sft.errors.TrainingError, match="failed"):
        job.wait(timeout_s=300)  # the data wait alone would take 7200 s
    node1 = job.stdout_paths[1].read_text() + job.stdout_paths[1].with_suffix(".err").read_text()
    assert "node 0 (node1) failed to tokenize the data: RuntimeError: Dataset does not contain any samples" in node1, \
        node1[-3000:]


def test_a_hang_in_node_0s_data_processing_is_named_and_nothing_waits(slurm_cluster, tiny_model, tiny_data,
                                                                       tmp_path, monkeypatch):
    """Node 0's tokenizer never returns and uses no CPU (as a deadlocked worker pool): node 0's data watchdog
    dumps its stacks, the job ends with the reason, node 1 stops with it; nobody waits for the time limit."""
    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as mp:
        mp.setenv("HPC_SFT_FAULT_DATA_HANG_S", "3600")
        mp.setenv("HPC_SFT_FAULT_NODE", "0")
        job = submit(tiny_model, tiny_data, ckpt, 2, tmp_path / "data", slurm_over={"hang_timeout_s": 10})
    with pytest.raises(hpc_sft.errors.TrainingError, match="made no progress") as failed:
        job.wait(timeout_s=240)
    assert "Last decision: give_up (hang: data processing on node 0 (node1)" in str(failed.value)
    node0 = job.stdout_paths[0].read_text()
    assert f"{MARK} on node 0 (node1): data processing on node 0 (node1) made no progress" in node0, node0[-3000:]
    assert re.search(r'File ".*faults\.py", line \d+ in pause', node0), node0[-3000:]  # where it hung
    node1 = job.stdout_paths[1].read_text() + job.stdout_paths[1].with_suffix(".err").read_text()
    assert "node 0 (node1) failed to tokenize the data: DataHang: data processing on node 0" in node1, node1[-3000:]
    stop = read_status(ckpt)["stops"][-1]
    assert stop["action"] == "give_up" and "slurm.hang_timeout_s" in stop["reason"], stop
    assert not (ckpt / LOCK_FILE).exists()  # a corrected rerun may start at once
