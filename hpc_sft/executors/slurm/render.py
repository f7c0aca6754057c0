"""Render the standalone sbatch script (templates/sbatch.sh.j2) that does what `hpc-sft submit` does."""
from __future__ import annotations

import json
import os
import sys

from ...container import check_lines
from ...serialize import to_dict
from ...templating import render


def sbatch_script(plan, recipe_name: str) -> str:
    """A standalone sbatch script doing what `hpc-sft submit` does, without submitit on the login node."""
    flags = [(k.replace("_", "-"), v) for k, v in sorted(plan.parameters.items())
             if k not in ("setup", "additional_parameters", "signal_delay_s", "stderr_to_stdout")]
    # the batch shell's own output stays Slurm's default (slurm-JOBID.out where you run sbatch): the job
    # folder does not exist before the job starts, and Slurm cannot create it
    flags += [("signal", f"USR2@{plan.config.slurm.signal_lead_s}"), ("open-mode", "append")]
    flags += [(k.replace("_", "-"), v) for k, v in plan.parameters["additional_parameters"].items()]
    container = plan.config.slurm.container
    return render("sbatch.sh.j2", recipe_name=recipe_name, flags=flags, setup=plan.config.slurm.setup,
                  container_checks=check_lines(container) if container is not None else [],
                  container_lines=plan.container_lines(),
                  python=sys.executable, venv_bin=os.path.dirname(sys.executable), folder=str(plan.folder),
                  config_json=json.dumps(to_dict(plan.config), sort_keys=True))
