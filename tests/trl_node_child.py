"""A training parent as a Slurm node runs it (signal recorder, then the trl backend), for signal tests.

Usage: python trl_node_child.py LAUNCH.json  (written by hpc_sft.backends.trl.launch.launch_file)
"""
import sys

from hpc_sft.backends.trl.backend import TRLSFTBackend
from hpc_sft.backends.trl.launch import read_launch_file
from hpc_sft.signals import SignalRecorder

if __name__ == "__main__":
    recorder = SignalRecorder().install()
    config, launch = read_launch_file(sys.argv[1])
    TRLSFTBackend().execute_training(config, launch)
    print("hpc-sft child: signal", recorder.received, flush=True)
