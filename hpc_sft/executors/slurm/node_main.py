"""Entry point of standalone sbatch scripts: `python -m hpc_sft.executors.slurm.node_main CONFIG.json` on every node."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ...errors import HpcSftError
from ...serialize import from_dict
from .node_task import NodeTask


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m hpc_sft.executors.slurm.node_main CONFIG.json", file=sys.stderr)
        return 2
    config = from_dict(json.loads(Path(argv[0]).read_text()))
    try:
        result = NodeTask(config)()
    except HpcSftError as exc:
        print(f"hpc-sft: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if result is not None:
        print(f"hpc-sft: finished: {result.checkpoint_path} ({result.samples_seen} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
