"""Tiny offline Llama model, tokenizer and synthetic datasets for fast end-to-end tests."""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path

RECIPE_VERSION = 1
MARKER_NAME = ".hpc_sft_tiny_complete"

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN, *ROLE_TOKENS)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

MODEL_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
VOCAB_SIZE = 400

_WORDS = (
    "apple river stone cloud tiger piano garden window rocket yellow silver "
    "forest candle bridge market orange planet winter summer dragon pencil "
    "mirror castle meadow"
).split()


# --------------------------------------------------------------------------
# synthetic text
# --------------------------------------------------------------------------


def _task_add(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    return (f"What is {a} plus {b}? Answer with the sum.",
            f"We add {a} and {b}. {a} + {b} = {a + b}. The answer is {a + b}.")


def _task_sub(rng: random.Random) -> tuple[str, str]:
    a, b = sorted((rng.randint(10, 999), rng.randint(10, 999)), reverse=True)
    return (f"Please compute {a} minus {b}.",
            f"We subtract {b} from {a}. {a} - {b} = {a - b}. The answer is {a - b}.")


def _task_reverse(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(_WORDS, rng.randint(3, 6))
    return (f"Reverse the order of these words: {' '.join(words)}",
            f"The words in reverse order are: {' '.join(reversed(words))}.")


def _task_sort(rng: random.Random) -> tuple[str, str]:
    nums = [rng.randint(1, 99) for _ in range(rng.randint(4, 7))]
    return (f"Sort these numbers from smallest to largest: {', '.join(map(str, nums))}",
            f"Sorted, the numbers are: {', '.join(map(str, sorted(nums)))}.")


def _task_count(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(_WORDS)
    return (f"How many letters are in the word {word}?",
            f"The word {word} is spelled {' '.join(word)}. It has {len(word)} letters.")


_TASKS = (_task_add, _task_sub, _task_reverse, _task_sort, _task_count)


def _conversation(rng: random.Random) -> list[dict]:
    user, assistant = rng.choice(_TASKS)(rng)
    return [{"role": "user", "content": user},
            {"role": "assistant", "content": assistant}]


def _document(rng: random.Random, index: int) -> str:
    sentences = [f"Note {index}."]
    for _ in range(rng.randint(3, 8)):
        user, assistant = rng.choice(_TASKS)(rng)
        sentences.append(f"{user} {assistant}")
    return " ".join(sentences)


def _render(messages: list[dict]) -> str:
    parts = [f"<|{m['role']}|>\n{m['content']}" for m in messages]
    return "\n".join(parts) + EOS_TOKEN


def _training_corpus(seed: int, n: int = 3000) -> list[str]:
    rng = random.Random(f"tiny-corpus-{seed}")
    texts = [_render(_conversation(rng)) for _ in range(n)]
    texts += [_document(rng, i) for i in range(n // 10)]
    return texts


# --------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------


def _write_jsonl(path: str | os.PathLike, rows) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def write_tiny_dataset(path: str | os.PathLike, n: int = 1200, seed: int = 0) -> Path:
    """Write ``n`` deterministic user/assistant conversations as messages JSONL.

    With the tiny tokenizer every sample is 30-90 tokens long, so ILT keeps all
    of them for any max_seq_len >= 128.
    """
    rng = random.Random(f"tiny-sft-{seed}")
    return _write_jsonl(path, ({"messages": _conversation(rng)} for _ in range(n)))


def write_tiny_pretraining_dataset(
    path: str | os.PathLike, n: int = 200, column: str = "document", seed: int = 0
) -> Path:
    """Write ``n`` deterministic plain-text documents as ``{column: text}`` JSONL."""
    rng = random.Random(f"tiny-pretrain-{seed}")
    return _write_jsonl(path, ({column: _document(rng, i)} for i in range(n)))


# --------------------------------------------------------------------------
# model + tokenizer
# --------------------------------------------------------------------------


def _train_tokenizer(seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(seed), trainer=trainer)
    return tok


def _wrap_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )


def _make_model(hf_tok, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(hf_tok),
        bos_token_id=None,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
        **MODEL_SHAPE,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def _marker_text(seed: int) -> str:
    return json.dumps({"recipe": RECIPE_VERSION, "seed": seed}, sort_keys=True)


def is_complete_build(out_dir: str | os.PathLike, seed: int = 0) -> bool:
    """True when ``out_dir`` holds a finished build of this recipe and seed."""
    marker = Path(out_dir) / MARKER_NAME
    try:
        return marker.read_text(encoding="utf-8") == _marker_text(seed)
    except OSError:
        return False


def _build_into(tmp: Path, seed: int) -> None:
    hf_tok = _wrap_tokenizer(_train_tokenizer(seed))
    model = _make_model(hf_tok, seed)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the demo's output
    model.save_pretrained(tmp)
    hf_tok.save_pretrained(tmp)
    (tmp / MARKER_NAME).write_text(_marker_text(seed), encoding="utf-8")


def _move_aside(path: Path) -> None:
    trash = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _publish(tmp: Path, out_dir: Path, seed: int) -> None:
    """Rename the finished temp build into place, replacing a stale directory."""
    for _ in range(5):
        try:
            os.rename(tmp, out_dir)
            return
        except OSError:
            if is_complete_build(out_dir, seed):  # a concurrent builder won
                return
            _move_aside(out_dir)
    raise RuntimeError(f"could not publish the tiny model build to {out_dir}")


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build (or reuse) a ~125k-parameter Llama model + BPE tokenizer in ``out_dir``.

    Deterministic for a given ``seed``; cached via a marker file written last;
    built in a temporary sibling directory and renamed into place.
    """
    out_dir = Path(out_dir).absolute()
    if is_complete_build(out_dir, seed):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        _build_into(tmp, seed)
        _publish(tmp, out_dir, seed)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def fast_cpu_kwargs(model, data, ckpt, **over) -> dict:
    """sft() arguments for a fast real CPU run of the tiny model (16 samples per step, 1 epoch by default).
    Everything else, data processing included, is the user's default."""
    kwargs = dict(model_path=str(model), data_path=str(data), ckpt_output_dir=str(ckpt), num_epochs=1,
                  effective_batch_size=16, learning_rate=1e-3, max_seq_len=256, max_tokens_per_gpu=4000,
                  device="cpu")
    kwargs.update(over)
    return kwargs
