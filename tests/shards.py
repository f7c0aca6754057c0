"""How scripts/test.sh splits the suite into three pytest processes that run at once, each with its own cluster.

HPC_SFT_TEST_SHARD=a and =c: the tests that need the Slurm cluster, on two separate Slurm 22.05 clusters (a: the
default names; c: a second cluster), split by file (SECOND_CLUSTER goes to c), plus some CPU-bound files
(MOVED) so that the three end together. HPC_SFT_TEST_SHARD=b: every other test, plus on a Slurm 24.11 cluster
CORE again (the core promises pass on both versions) and ONLY_24_11 (the sites-without-requeue chain: preempted
and time-limited, bit-identical; it ran on 22.05 by hand). The time-limit requeue test is not in CORE: on 24.11
the chain test's time limit covers the warning, the storm covers requeue. Measured on 2 cores (17:42 from a clean
clone): a 15:01, b 15:22, c 16:50 with the time-limit test in CORE and the chain test in c, before this split.
Unset: the whole suite in one process, as plain `pytest` runs it. Most cluster tests wait on Slurm (time limits,
grace times, preemption), so the three overlap well on 2 cores.
"""
CORE = (  # the core Slurm promises, run on both versions
    "tests/test_slurm.py::test_a_job_runs_this_checkout_with_this_python",
    "tests/test_slurm.py::test_two_nodes_train_as_one_world",
    "tests/test_requeue_slurm.py::test_preemption_storm_resumes_bit_identical",
    "tests/test_cli_slurm.py::test_submit_status_logs_cancel",
)
ONLY_24_11 = ("tests/test_resubmit_slurm.py",)
SECOND_CLUSTER = ("tests/test_faults_slurm.py", "tests/test_trl_slurm.py",
                  "tests/test_sweep_slurm.py", "tests/test_srun_slurm.py", "tests/test_job_handle_slurm.py",
                  "tests/test_cli_slurm.py")
MOVED = {"tests/test_local_runs.py": "a",  # no cluster: balances the three (measured, tests/shards.py's doc)
         "tests/test_plot.py": "c", "tests/test_trl_signals.py": "c", "tests/test_hub_models.py": "c",
         "tests/test_tracking.py": "c"}
SHARDS = ("a", "b", "c")


def in_shard(shard: str, nodeid: str, needs_cluster: bool) -> bool:
    """Whether a test runs in shard a, b or c (see the module docstring)."""
    if shard not in SHARDS:
        raise ValueError(f"HPC_SFT_TEST_SHARD={shard!r}: use one of {', '.join(SHARDS)} (or leave it unset)")
    path = nodeid.split("::")[0]
    if needs_cluster:
        home = "c" if path in SECOND_CLUSTER else "b" if path in ONLY_24_11 else "a"
        return shard == home or (shard == "b" and nodeid.split("[")[0] in CORE)
    return shard == MOVED.get(path, "b")
