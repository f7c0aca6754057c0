"""scripts/test.sh's split of the suite: every name it lists exists, and each test lands where it should."""
import re
from pathlib import Path

import pytest

from tests.shards import CORE, MOVED, ONLY_24_11, SECOND_CLUSTER, SHARDS, in_shard

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("nodeid", CORE)
def test_core_tests_exist_and_need_the_cluster(nodeid):
    path, name = nodeid.split("::")
    source = (REPO / path).read_text()
    assert re.search(rf"^def {name}\([^)]*\bslurm_cluster\b", source, re.M), f"{nodeid} is gone"


def test_listed_files_exist():
    for path in (*SECOND_CLUSTER, *ONLY_24_11, *MOVED):
        assert (REPO / path).is_file(), path


def test_each_test_runs_once_on_22_05_and_core_again_on_24_11():
    tests = [(CORE[0], True), ("tests/test_slurm.py::other", True), ("tests/test_faults_slurm.py::x", True),
             ("tests/test_resubmit_slurm.py::w", True), ("tests/test_local_runs.py::y", False),
             ("tests/test_spec.py::z", False)]
    homes = {nodeid: [s for s in SHARDS if in_shard(s, nodeid, cluster)] for nodeid, cluster in tests}
    assert homes == {CORE[0]: ["a", "b"], "tests/test_slurm.py::other": ["a"], "tests/test_faults_slurm.py::x": ["c"],
                     "tests/test_resubmit_slurm.py::w": ["b"], "tests/test_local_runs.py::y": ["a"],
                     "tests/test_spec.py::z": ["b"]}
    assert in_shard("b", CORE[0] + "[p1]", True)
    with pytest.raises(ValueError, match="HPC_SFT_TEST_SHARD"):
        in_shard("d", CORE[0], True)
