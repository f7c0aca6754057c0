"""Entry points run inside a container image (slurm.container), started by the node task on the host:
`python3 -m hpc_sft.in_image process-data OUT_DIR CONFIG_JSON` tokenizes with the backend installed in the image.
The image therefore needs hpc-sft and the backend installed (docs/containers.md)."""
from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "process-data":
        print("usage: python3 -m hpc_sft.in_image process-data OUT_DIR CONFIG_JSON", file=sys.stderr)
        return 2
    from . import registry
    from .serialize import from_dict

    config = from_dict(json.loads(argv[2]))
    registry.backend_class(config.backend)().process_data(config, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
