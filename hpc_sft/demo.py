"""`hpc-sft demo`: build a tiny model and data set locally, write a recipe, and train it on CPU here."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from . import pipeline
from .config import recipe as recipes
from .config.skeleton import recipe_text

DEMO_SFT = {"model_path": '"model"', "data_path": '"train.jsonl"', "ckpt_output_dir": '"checkpoints"',
            "num_epochs": "2", "effective_batch_size": "16", "learning_rate": "1e-3", "max_seq_len": "256",
            "max_tokens_per_gpu": "4096", "device": '"cpu"'}


def prepare(folder: Path, epochs: int) -> Path:
    """Tiny model, 1200 conversations and a local-executor recipe in `folder`; returns the recipe path."""
    from .tiny import build_tiny_model, write_tiny_dataset

    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_model(folder / "model")
    if not (folder / "train.jsonl").is_file():
        write_tiny_dataset(folder / "train.jsonl", n=1200)
    path = folder / "recipe.toml"
    path.write_text(recipe_text(path.name, "local", {**DEMO_SFT, "num_epochs": str(epochs)}))
    return path


def run_demo(folder: Path, epochs: int, echo: Callable[[str], None] = print):
    path = prepare(folder, epochs)
    echo(f"demo: tiny model and data in {folder}; recipe {path}")
    config = recipes.load(path)  # validated once, here
    echo(f"demo: training on CPU, checkpoints go to {config.ckpt_output_dir}")
    return pipeline.run(config, warn=lambda text: echo(f"demo: warning: {text}"))
