"""Bring the test cluster up for a benchmark (installing Slurm's packages if needed) and take its environment."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "slurm" / "cluster.sh"
sys.path.insert(0, str(REPO))
from tests.slurm_helpers import slurm_env_file  # noqa: E402  (the tests read the cluster's env.sh the same way)


def cluster_up(nodes: int = 4) -> None:
    """`slurm/cluster.sh install` + `up`, then this process (and what it starts) talks to that cluster."""
    subprocess.run([str(SCRIPT), "install"], check=True, capture_output=True)
    out = subprocess.run([str(SCRIPT), "up", "--nodes", str(nodes)], check=True, capture_output=True, text=True)
    os.environ.update(slurm_env_file(Path(out.stdout.strip().splitlines()[-1])))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
