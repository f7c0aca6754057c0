"""scripts/test.sh's split of the suite: every core test named exists, and each test lands in the right shard."""
import re
from pathlib import Path

import pytest

from tests.shards import CORE, in_shard

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("nodeid", CORE)
def test_core_tests_exist_and_need_the_cluster(nodeid):
    path, name = nodeid.split("::")
    source = (REPO / path).read_text()
    assert re.search(rf"^def {name}\((?:[^)]*\b)?slurm_cluster\b", source, re.M | re.S), f"{nodeid} is gone"


def test_shards_split_the_suite():
    core, other = CORE[0], "tests/test_slurm.py::test_something_else"
    assert in_shard("a", core, True) and in_shard("a", other, True) and not in_shard("a", "tests/t.py::x", False)
    assert in_shard("b", core + "[p1]", True) and not in_shard("b", other, True) and in_shard("b", "t.py::x", False)
    with pytest.raises(ValueError, match="HPC_SFT_TEST_SHARD"):
        in_shard("c", core, True)
