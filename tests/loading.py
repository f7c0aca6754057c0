"""Load a returned checkpoint the way a user does and compare it with the weights that were trained."""
from __future__ import annotations

from pathlib import Path

PROMPT = [{"role": "user", "content": "What is 12 plus 30? Answer with the sum."}]


def trained_state(folder: Path) -> dict:
    """The weights in a training state folder (full_state/epoch_E or trl's checkpoint-N), DDP prefix dropped."""
    from safetensors.torch import load_file

    state = {}
    for file in sorted(Path(folder).glob("model*.safetensors")):
        state.update(load_file(str(file)))
    assert state, f"no model*.safetensors in {folder}"
    return {k.removeprefix("module."): v for k, v in state.items()}


def prompt_logits(model, tokenizer):
    import torch

    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        return model(input_ids=ids["input_ids"]).logits


def assert_loads_as_trained(checkpoint: Path, state_folder: Path, base_model: Path | None = None) -> None:
    """from_pretrained(checkpoint) loads with no missing/unexpected keys, and its logits on a fixed prompt
    equal those of the trained weights in `state_folder` (and differ from the untrained base model's)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(str(checkpoint), output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    assert not bad, f"{checkpoint} does not load cleanly: {bad}"
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    reference = AutoModelForCausalLM.from_config(model.config)
    reference.load_state_dict(trained_state(state_folder))
    got = prompt_logits(model.eval(), tokenizer)
    assert torch.equal(got, prompt_logits(reference.eval(), tokenizer)), f"{checkpoint}: logits differ from the trained weights"
    if base_model is not None:
        base = AutoModelForCausalLM.from_pretrained(str(base_model)).eval()
        assert not torch.equal(got, prompt_logits(base, tokenizer)), f"{checkpoint} holds the untrained weights"


def newest_full_state(ckpt: Path) -> Path:
    states = sorted(Path(ckpt, "full_state").glob("epoch_*"), key=lambda p: int(p.name.split("_")[1]))
    assert states, f"no full_state/epoch_* in {ckpt}"
    return states[-1]


def newest_trl_checkpoint(ckpt: Path) -> Path:
    found = sorted(Path(ckpt).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert found, f"no checkpoint-N in {ckpt}"
    return found[-1]
