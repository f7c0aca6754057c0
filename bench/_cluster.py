"""Bring the test cluster up for a benchmark (installing Slurm's packages if needed) and take its environment."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "slurm" / "cluster.sh"


def cluster_up(nodes: int = 4) -> None:
    """`slurm/cluster.sh install` + `up`, then this process (and what it starts) talks to that cluster."""
    subprocess.run([str(SCRIPT), "install"], check=True, capture_output=True)
    out = subprocess.run([str(SCRIPT), "up", "--nodes", str(nodes)], check=True, capture_output=True, text=True)
    env_sh = Path(out.stdout.strip().splitlines()[-1])
    for line in env_sh.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            os.environ[key] = value.strip("'\"")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
