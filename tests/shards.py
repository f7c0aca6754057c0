"""How scripts/test.sh splits the suite into two pytest processes that run at once, each with its own cluster.

HPC_SFT_TEST_SHARD=a: every test that needs the Slurm cluster (on 22.05, the default names).
HPC_SFT_TEST_SHARD=b: every other test, plus CORE again on the second cluster (Slurm 24.11): the core promises
pass on both versions. Unset: the whole suite in one process, as plain `pytest` runs it.
"""
CORE = (  # the core Slurm promises, run on both versions
    "tests/test_slurm.py::test_two_nodes_train_as_one_world",
    "tests/test_requeue_slurm.py::test_preemption_storm_resumes_bit_identical",
    "tests/test_requeue_slurm.py::test_time_limit_requeues_itself_and_finishes",
    "tests/test_cli_slurm.py::test_submit_status_logs_cancel",
    "tests/test_resubmit_slurm.py::test_preempted_and_time_limited_without_requeue_finishes_bit_identical",
)


def in_shard(shard: str, nodeid: str, needs_cluster: bool) -> bool:
    """Whether a test runs in shard 'a' or 'b' (see the module docstring)."""
    if shard == "a":
        return needs_cluster
    if shard == "b":
        return not needs_cluster or nodeid.split("[")[0] in CORE
    raise ValueError(f"HPC_SFT_TEST_SHARD={shard!r}: use 'a' or 'b' (or leave it unset)")
