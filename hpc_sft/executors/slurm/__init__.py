"""Everything that talks to Slurm: options -> sbatch, the job handle, SLURM_* -> rendezvous, the Slurm CLI client, the node task."""
