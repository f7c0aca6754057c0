"""How scripts/test.sh splits the suite into three pytest processes that run at once, each with its own cluster.

HPC_SFT_TEST_SHARD=a and =c: the tests that need the Slurm cluster, on two separate Slurm 22.05 clusters (a: the
default names; c: a second cluster), split by file (SECOND_CLUSTER goes to c), plus some CPU-bound files
(MOVED) so that the three end together (measured on 2 cores: a 17:07, b 12:55, c 19:09 before test_exact_resume
moved to b and test_plot to c). HPC_SFT_TEST_SHARD=b: every other test, plus CORE again on a Slurm 24.11
cluster: the core promises pass on both versions. Unset: the whole suite in one process, as plain `pytest` runs it.
Most cluster tests wait on Slurm (time limits, grace times, preemption), so the three overlap well on 2 cores.
"""
CORE = (  # the core Slurm promises, run on both versions
    "tests/test_slurm.py::test_a_job_runs_this_checkout_with_this_python",
    "tests/test_slurm.py::test_two_nodes_train_as_one_world",
    "tests/test_requeue_slurm.py::test_preemption_storm_resumes_bit_identical",
    "tests/test_requeue_slurm.py::test_time_limit_requeues_itself_and_finishes",
    "tests/test_cli_slurm.py::test_submit_status_logs_cancel",
)
SECOND_CLUSTER = ("tests/test_resubmit_slurm.py", "tests/test_faults_slurm.py", "tests/test_trl_slurm.py",
                  "tests/test_sweep_slurm.py", "tests/test_srun_slurm.py", "tests/test_job_handle_slurm.py",
                  "tests/test_cli_slurm.py")
MOVED = {"tests/test_local_runs.py": "a",  # no cluster: balances the three (measured, tests/shards.py's doc)
         "tests/test_plot.py": "c", "tests/test_trl_signals.py": "c"}
SHARDS = ("a", "b", "c")


def in_shard(shard: str, nodeid: str, needs_cluster: bool) -> bool:
    """Whether a test runs in shard a, b or c (see the module docstring)."""
    if shard not in SHARDS:
        raise ValueError(f"HPC_SFT_TEST_SHARD={shard!r}: use one of {', '.join(SHARDS)} (or leave it unset)")
    path = nodeid.split("::")[0]
    if needs_cluster:
        home = "c" if path in SECOND_CLUSTER else "a"
        return shard == home or (shard == "b" and nodeid.split("[")[0] in CORE)
    return shard == MOVED.get(path, "b")
