"""The model work of a transformers model, for the scheduler: prefill newcomers, decode the batch.

The running rows share one left-padded KV cache (engine/runtime/kvbatch.py). Newcomers are prefilled in
groups of similar prompt length (padding costs as much as a real token on a CPU), each group in
a cache of its own that joins the running one only once its forward pass has succeeded, so a
failed prefill leaves the running answers untouched.
"""
from __future__ import annotations

import inspect

import torch

from engine.runtime.kvbatch import KVBatch, prefill_inputs

# Newcomers are prefilled together only while padding adds at most this share of real tokens:
# on a CPU a padded token costs as much as a real one, and batching long prompts gains little.
PREFILL_PADDING = 0.25


def length_groups(items: list, key) -> list[list]:
    """`items` in groups to prefill together: longest first, each group's padding (to its longest
    member) at most PREFILL_PADDING of its real tokens."""
    groups: list[list] = []
    for item in sorted(items, key=key, reverse=True):
        group = groups[-1] if groups else None
        if group is not None and key(group[0]) * (len(group) + 1) <= \
                (1 + PREFILL_PADDING) * (sum(map(key, group)) + key(item)):
            group.append(item)
        else:
            groups.append([item])
    return groups


class TorchExecutor:
    """Forward passes of a transformers model (torch_model.py's LoadedModel.executor) over the
    scheduler's running rows: `model` in eval mode on `device`; `pad_id` fills short prompts."""

    kind = "torch"
    torch_threads = 0  # all the configured generation threads
    max_tokens = None  # the cache grows with the batch
    max_rows = None
    can_warm = False  # no prefix cache: a prompt is prefilled whole when its row joins

    def __init__(self, model: torch.nn.Module, device: torch.device, pad_id: int) -> None:
        self._model = model
        self.device = device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self._pad_id = pad_id
        # transformers v5 renamed forward(past_key_values=) to cache=; accept either.
        self._cache_kwarg = "cache" if "cache" in inspect.signature(self._model.forward).parameters \
            else "past_key_values"
        self._kv: KVBatch | None = None

    def cached_prefix(self, prompt: list[int]) -> int:
        return 0

    def warm(self, tokens: list[int]) -> None:
        raise NotImplementedError("the torch executor keeps no prefix cache")

    def prefill_groups(self, prompts: list[list[int]]) -> list[list[int]]:
        """Indices of `prompts` to prefill together, in order."""
        return length_groups(list(range(len(prompts))), key=lambda i: len(prompts[i]))

    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        """Next-token logits [n, V] of each prompt; the rows join the running batch at its end."""
        ids, mask, positions = prefill_inputs(prompts, self._pad_id, self.device)
        kv = KVBatch.empty(self._model.config, mask, mask.sum(dim=1))
        logits = self._forward(ids, mask, positions, kv)
        kv.last_tokens = torch.zeros(len(prompts), dtype=torch.long, device=self.device)
        if self._kv is None:
            self._kv = kv
        else:
            self._kv.merge(kv)
        return logits

    def decode(self, tokens: list[int]) -> torch.Tensor:
        """Feed each running row its last token; next-token logits [B, V]."""
        self._kv.last_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device)
        ids, mask, positions = self._kv.step_inputs()
        logits = self._forward(ids, mask, positions, self._kv)
        self._kv.advance(self._kv.last_tokens)
        return logits

    def keep(self, rows: list[int]) -> None:
        """Keep only these running rows, in this order."""
        if not rows:
            self._kv = None
            return
        self._kv.select(torch.tensor(rows, dtype=torch.long, device=self.device))

    def clear(self) -> None:
        self._kv = None

    def cache_bytes(self) -> int:
        kv = self._kv
        if kv is None:
            return 0
        return sum(t.numel() * t.element_size() for layer in kv.cache.layers
                   for t in (layer.kbuf, layer.vbuf) if t is not None)

    def describe(self) -> dict:
        return {"executor": self.kind}

    def open(self) -> None:
        pass

    def close(self) -> None:
        self._kv = None

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, kv: KVBatch) -> torch.Tensor:
        """One forward pass over the batch; the next-token logits [B, V] (only the last position's)."""
        out = self._model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          logits_to_keep=1, **{self._cache_kwarg: kv.cache})
        return out.logits[:, -1, :]
