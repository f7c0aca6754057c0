"""Body of one torchrun worker for the trl backend: `torchrun ... worker.py ARGS.json`."""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from hpc_sft.backends.trl.launch import read_launch_file
    from hpc_sft.backends.trl.train import train

    config, launch = read_launch_file(argv[1])
    train(config, launch)
    shutdown()
    return 0


def shutdown() -> None:
    """Leave together: a rank that exits while another still saves aborts in torch's C++ teardown
    ("terminate called without an active exception"), and torchrun then fails the whole run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
