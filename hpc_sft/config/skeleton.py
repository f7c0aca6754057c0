"""The recipe skeleton (templates/recipe.toml.j2): every parameter commented, from the one definition in spec."""
from __future__ import annotations

from ..templating import render
from .spec import PARAMS

EXAMPLES = {"model_path": '"/shared/models/Qwen2.5-7B-Instruct"', "data_path": '"data/train.jsonl"',
            "ckpt_output_dir": '"/shared/ckpt/run1"', "backend": '"instructlab-training"', "num_epochs": "3",
            "effective_batch_size": "128", "learning_rate": "1e-5", "max_seq_len": "4096",
            "max_tokens_per_gpu": "40000", "data_output_dir": '"/shared/ckpt/run1/data"', "save_samples": "0",
            "warmup_steps": "0", "accelerate_full_state_at_epoch": "true", "checkpoint_at_epoch": "true",
            "is_pretraining": "false", "block_size": "2048", "document_column_name": '"document"',
            "nproc_per_node": '"gpu"', "nnodes": "1", "node_rank": "0", "rdzv_id": "12345",
            "rdzv_endpoint": '"node001:29500"', "device": '"cuda"', "tracking": '"tensorboard"'}
SLURM_LINES = (("partition", '"gpu"', "sbatch --partition"), ("nodes", "1", "one task per node; nnodes follows"),
               ("gpus_per_node", "8", "GPUs per node (0 on CPU)"), ("time", '"24:00:00"', "time limit"),
               ("signal_lead_s", "300", "warning signal this long before the limit: checkpoint, requeue"),
               ("max_requeues", "10", "give up after this many requeues"),
               ("setup", "[]", 'e.g. ["module load cuda", "source venv/bin/activate"]'))


def recipe_text(name: str, executor: str = "slurm", values: dict | None = None) -> str:
    """A commented recipe listing every parameter (from the one definition); `values` are set, others commented."""
    params = [dict(name=p.name, doc=p.doc, required=p.positional, example=EXAMPLES.get(p.name, '""'))
              for p in PARAMS if p.name not in ("executor", "slurm", "sweep")]
    text = render("recipe.toml.j2", name=name, executor=executor, params=params, values=values or {},
                  slurm=SLURM_LINES)
    return text if executor == "slurm" else comment_out_table(text, "slurm")


def comment_out_table(text: str, table: str) -> str:
    """The recipe with the [table] section commented out (a local recipe must not carry a [slurm] table)."""
    head, sep, tail = text.partition(f"\n[{table}]")
    if not sep:
        return text
    lines = f"[{table}]{tail}".splitlines()
    return head + "\n" + "\n".join(f"# {line}" if line.strip() and not line.startswith("#") else line
                                     for line in lines) + "\n"
