"""The pure Slurm core: node lists expand like `scontrol show hostnames`, rendezvous derives from SLURM_*."""
import pytest

from hpc_sft.executors.slurm.env import (PORT_BASE, PORT_SPAN, SlurmEnv, outer_job_vars, rendezvous, rendezvous_port,
                                         without_outer_job)
from hpc_sft.executors.slurm.nodelist import expand_nodelist


@pytest.mark.parametrize("text,hosts", [
    ("node1", ["node1"]),
    ("node[1-2]", ["node1", "node2"]),
    ("gpu-[01-03,07]", ["gpu-01", "gpu-02", "gpu-03", "gpu-07"]),
    ("a[1-2],b3", ["a1", "a2", "b3"]),
    ("n[008-010]", ["n008", "n009", "n010"]),
    ("rack[1-2]-n[1,3]", ["rack1-n1", "rack1-n3", "rack2-n1", "rack2-n3"]),
    ("x[9-11],y,z[05]", ["x9", "x10", "x11", "y", "z05"]),
    ("login.cluster.org", ["login.cluster.org"]),
])
def test_expand(text, hosts):
    assert expand_nodelist(text) == hosts


@pytest.mark.parametrize("text", ["", "node[1-2", "node1-2]", "n[a-b]", "n[3-1]", "a,,b", "n[[1]]"])
def test_bad_nodelists_fail_loudly(text):
    with pytest.raises(ValueError, match="SLURM_JOB_NODELIST"):
        expand_nodelist(text)


def env(**over):
    base = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu-[01-03,07]", "SLURM_JOB_NUM_NODES": "4",
            "SLURM_NODEID": "2"}
    return {k: v for k, v in {**base, **over}.items() if v is not None}


def test_rendezvous_table():
    for node in range(4):
        rdzv = rendezvous(SlurmEnv.from_environ(env(SLURM_NODEID=str(node))))
        assert (rdzv.nnodes, rdzv.node_rank, rdzv.rdzv_id) == (4, node, "4242")
        assert rdzv.rdzv_endpoint == f"gpu-01:{PORT_BASE + 4242}"


def test_restart_count_and_requeue_keep_the_endpoint():
    first = SlurmEnv.from_environ(env())
    again = SlurmEnv.from_environ(env(SLURM_RESTART_COUNT="3"))
    assert (first.restart_count, again.restart_count) == (0, 3)
    assert rendezvous(first).rdzv_endpoint == rendezvous(again).rdzv_endpoint


def test_concurrent_jobs_get_different_ports():
    ports = {rendezvous_port(str(j)) for j in range(1000, 1000 + PORT_SPAN)}
    assert len(ports) == PORT_SPAN and min(ports) >= PORT_BASE and max(ports) < 32768
    assert rendezvous_port("4242") == rendezvous_port("4242")


@pytest.mark.parametrize("over,key", [
    ({"SLURM_JOB_ID": None}, "SLURM_JOB_ID"),
    ({"SLURM_NODEID": None}, "SLURM_NODEID"),
    ({"SLURM_JOB_NUM_NODES": "3"}, "names 4 hosts but SLURM_JOB_NUM_NODES is 3"),
    ({"SLURM_JOB_NODELIST": "gpu-[01-03,07"}, "unbalanced"),
    ({"SLURM_NODEID": "7"}, "outside 0..3"),
])
def test_bad_environment_never_falls_back_to_localhost(over, key):
    with pytest.raises(ValueError, match=key):
        rendezvous(SlurmEnv.from_environ(env(**over)))


@pytest.mark.parametrize("cpus,nproc,omp,device,threads", [
    ("8", 2, None, "cpu", "4"),  # the job's CPUs on this node, split among its processes
    ("1", 2, None, "cpu", "1"),  # never 0
    (None, 1, None, "cpu", None),  # Slurm did not say: left to torch
    ("8", 2, "3", "cpu", None),  # the user's OMP_NUM_THREADS wins
    ("8", 1, None, "cuda", None),  # GPUs: untouched
])
def test_cpu_threads_follow_the_allocation(monkeypatch, cpus, nproc, omp, device, threads):
    from hpc_sft.executors.slurm.node_task import cpu_threads
    from hpc_sft.launch import Launch

    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    slurm = SlurmEnv.from_environ(env(**({"SLURM_CPUS_ON_NODE": cpus} if cpus else {})))
    launch = cpu_threads(Launch(nproc_per_node=nproc, device=device), slurm)
    assert dict(launch.env).get("OMP_NUM_THREADS") == threads


def test_an_outer_jobs_slurm_variables_are_hidden_while_submitting_then_restored():
    env = {"SLURM_CONF": "/etc/slurm/slurm.conf", "SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "2",
           "SLURMD_NODENAME": "n1", "SBATCH_ACCOUNT": "proj", "PATH": "/bin"}
    assert outer_job_vars(env) == ["SLURMD_NODENAME", "SLURM_CPUS_PER_TASK", "SLURM_JOB_ID"]
    with without_outer_job(env):
        assert env == {"SLURM_CONF": "/etc/slurm/slurm.conf", "SBATCH_ACCOUNT": "proj", "PATH": "/bin"}
    assert env["SLURM_CPUS_PER_TASK"] == "2" and len(env) == 6


def test_each_step_of_one_allocation_is_its_own_attempt():
    base = {"SLURM_JOB_ID": "41", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "0"}
    first, second = (SlurmEnv.from_environ({**base, "SLURM_STEP_ID": step}) for step in ("0", "1"))
    assert first.attempt == "41.0.0" and second.attempt == "41.0.1"
    assert rendezvous(first) == rendezvous(second)  # same world, same endpoint: only the run's files differ


def test_srun_executor_needs_an_allocation_and_its_own_shell():
    from hpc_sft.errors import ConfigError
    from hpc_sft.executors.srun import Allocation, allocation

    with pytest.raises(ConfigError, match="executor: is 'srun', but this shell is not inside a Slurm allocation"):
        allocation({})
    inside = {"SLURM_JOB_ID": "41", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_JOB_NUM_NODES": "2"}
    assert allocation(inside) == Allocation("41", 2, "n[1-2]")
    with pytest.raises(ConfigError, match="already runs inside job step 41.3"):
        allocation({**inside, "SLURM_STEP_ID": "3"})
