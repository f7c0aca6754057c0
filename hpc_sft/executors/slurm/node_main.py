"""Entry point on every node of standalone sbatch scripts and of executor='srun' steps:
`python -m hpc_sft.executors.slurm.node_main [--in-allocation] CONFIG.json`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ...errors import HpcSftError
from ...serialize import from_dict
from .node_task import NodeTask


def main(argv: list[str]) -> int:
    in_step = argv[:1] == ["--in-allocation"]
    argv = argv[1:] if in_step else argv
    if len(argv) != 1:
        print("usage: python -m hpc_sft.executors.slurm.node_main [--in-allocation] CONFIG.json", file=sys.stderr)
        return 2
    config = from_dict(json.loads(Path(argv[0]).read_text()))
    try:
        result = NodeTask(config, in_step)()
    except HpcSftError as exc:
        print(f"hpc-sft: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if result is not None:
        print(f"hpc-sft: finished: {result.checkpoint_path} ({result.samples_seen} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
