"""Check that a final checkpoint loads with from_pretrained as the saved weights (names and shapes), cheaply."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .errors import TrainingError


def saved_shapes(path: Path) -> dict[str, tuple]:
    """Tensor name -> shape of every weight file in `path`, read from the file headers only."""
    from safetensors import safe_open

    shapes: dict[str, tuple] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():
                shapes[key] = tuple(fh.get_slice(key).get_shape())
    return shapes


def expected_model(path: Path):
    """The architecture from_pretrained would build for `path`, on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)))


def tied_groups(model) -> dict[str, frozenset]:
    """Parameter name -> every name sharing that tensor (tied embeddings load from any one of them)."""
    by_id: dict[int, set] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(param), set()).add(name)
    return {name: frozenset(names) for names in by_id.values() for name in names}


def load_problem(path: Path) -> Optional[str]:
    """Why from_pretrained(path) would not give back the saved weights, or None when it would."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return "no config.json"
    saved = saved_shapes(path)
    if not saved:
        return "no *.safetensors weights"
    model = expected_model(path)
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    groups = tied_groups(model)
    ignored = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()]
    unexpected = [k for k in saved if k not in expected and not any(p.search(k) for p in ignored)]
    missing = [k for k in expected if not (groups.get(k, {k}) & saved.keys())]
    wrong = [k for k in expected.keys() & saved.keys() if expected[k] != saved[k]]
    problems = [f"{label} {', '.join(sorted(keys)[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)} in all)"
                for label, keys in (("unexpected keys", unexpected), ("missing keys", missing),
                                    ("shape mismatches", wrong)) if keys]
    return "; ".join(problems) or None


def verify_loadable(path: Path) -> Path:
    """Raise TrainingError unless the checkpoint loads as itself (a run never hands back a random model)."""
    problem = load_problem(path)
    if problem:
        raise TrainingError(f"the final checkpoint {path} would not load as the trained model with "
                            f"AutoModelForCausalLM.from_pretrained: {problem}. The training state is intact "
                            "(full_state/); please report this with the backend and its version")
    return Path(path)
