"""The running batch's KV cache: left-padded rows that join, grow and leave between steps.

transformers' DynamicLayer concatenates every new token onto its keys and values, copying the
whole cache at every step. BatchLayer writes into a buffer with spare columns instead, and exposes
the used part as a view (`keys`/`values`, what the attention reads), so a decode step copies only
the new token. Trimming columns that are padding in every row is moving the view's start.

The model sees an ordinary transformers Cache: `update(key, value, layer_idx)` per layer and
`get_seq_length`/`get_mask_sizes` from the views. Everything stays on the model's device.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

# Spare columns added when a buffer is (re)allocated: a reallocation every GROW steps.
GROW = 128


class BatchLayer(DynamicLayer):
    """A DynamicLayer whose keys/values are views [B, H, start:end] of a larger buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.kbuf: torch.Tensor | None = None
        self.vbuf: torch.Tensor | None = None
        self.start = 0
        self.end = 0

    def _set_views(self) -> None:
        self.keys = self.kbuf[:, :, self.start:self.end]
        self.values = self.vbuf[:, :, self.start:self.end]

    def _adopt(self, kbuf: torch.Tensor, vbuf: torch.Tensor, length: int) -> None:
        """Take new buffers whose first `length` columns are the used ones."""
        self.kbuf = kbuf
        self.vbuf = vbuf
        self.start = 0
        self.end = length
        self._set_views()

    def _allocate(self, like_k: torch.Tensor, like_v: torch.Tensor, batch: int, columns: int):
        kshape = (batch, like_k.shape[1], columns, like_k.shape[3])
        vshape = (batch, like_v.shape[1], columns, like_v.shape[3])
        return (torch.empty(kshape, dtype=like_k.dtype, device=like_k.device),
                torch.empty(vshape, dtype=like_v.dtype, device=like_v.device))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        q = key_states.shape[-2]
        if self.kbuf is None:
            self.device = key_states.device
            kbuf, vbuf = self._allocate(key_states, value_states, key_states.shape[0], q + GROW)
            self._adopt(kbuf, vbuf, 0)
            self.is_initialized = True
        elif self.end + q > self.kbuf.shape[2]:
            self._compact(q + GROW)
        self.kbuf[:, :, self.end:self.end + q].copy_(key_states)
        self.vbuf[:, :, self.end:self.end + q].copy_(value_states)
        self.end += q
        self._set_views()
        return self.keys, self.values

    def _compact(self, spare: int) -> None:
        """Move the used columns to a new buffer with `spare` free columns after them."""
        length = self.end - self.start
        kbuf, vbuf = self._allocate(self.kbuf, self.vbuf, self.kbuf.shape[0], length + spare)
        kbuf[:, :, :length].copy_(self.keys)
        vbuf[:, :, :length].copy_(self.values)
        self._adopt(kbuf, vbuf, length)

    def get_seq_length(self) -> int:
        return self.end - self.start if self.kbuf is not None else 0

    def trim_left(self, columns: int) -> None:
        self.start += columns
        self._set_views()

    def select_rows(self, index: torch.Tensor) -> None:
        length = self.end - self.start
        kbuf, vbuf = self._allocate(self.kbuf, self.vbuf, index.shape[0], length + GROW)
        kbuf[:, :, :length].copy_(self.keys.index_select(0, index))
        vbuf[:, :, :length].copy_(self.values.index_select(0, index))
        self._adopt(kbuf, vbuf, length)

    def append_rows(self, other: "BatchLayer") -> None:
        """Rows of `other` after ours; the shorter side is padded on the left with zeros."""
        mine = self.end - self.start
        theirs = other.end - other.start
        length = max(mine, theirs)
        b1 = self.kbuf.shape[0]
        b2 = other.kbuf.shape[0]
        kbuf, vbuf = self._allocate(self.kbuf, self.vbuf, b1 + b2, length + GROW)
        for buf, a, b in ((kbuf, self.keys, other.keys), (vbuf, self.values, other.values)):
            buf[:b1, :, :length - mine].zero_()
            buf[:b1, :, length - mine:length].copy_(a)
            buf[b1:, :, :length - theirs].zero_()
            buf[b1:, :, length - theirs:length].copy_(b)
        self._adopt(kbuf, vbuf, length)


class BatchCache(DynamicCache):
    """A DynamicCache made of BatchLayers, one per decoder layer."""

    def __init__(self, num_layers: int) -> None:
        super(DynamicCache, self).__init__(layers=[BatchLayer() for _ in range(num_layers)])


def num_cache_layers(model_config) -> int:
    text = model_config.get_text_config(decoder=True) if hasattr(model_config, "get_text_config") else model_config
    return int(text.num_hidden_layers)


class KVBatch:
    """The running rows' cache, attention mask, next positions and last tokens, row-aligned."""

    def __init__(self, cache: BatchCache, mask: torch.Tensor, next_positions: torch.Tensor) -> None:
        self.cache = cache
        self.mask = mask  # [B, L] long, 0 = padding
        self.next_positions = next_positions  # [B] long
        self.last_tokens: torch.Tensor | None = None  # [B] long, fed to the next step

    @classmethod
    def empty(cls, model_config, mask: torch.Tensor, next_positions: torch.Tensor) -> "KVBatch":
        return cls(BatchCache(num_cache_layers(model_config)), mask, next_positions)

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids [B,1], mask [B,L+1], position_ids [B,1]) for the next decode step."""
        ones = torch.ones((self.rows, 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        return self.last_tokens.view(-1, 1), self.mask, self.next_positions.view(-1, 1)

    def advance(self, tokens: torch.Tensor) -> None:
        self.last_tokens = tokens
        self.next_positions = self.next_positions + 1

    def merge(self, other: "KVBatch") -> None:
        """Append `other`'s rows (a freshly prefilled group)."""
        length = max(self.length, other.length)
        self.mask = torch.cat([_pad_left(self.mask, length), _pad_left(other.mask, length)], dim=0)
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.append_rows(theirs)
        self.next_positions = torch.cat([self.next_positions, other.next_positions])
        self.last_tokens = torch.cat([self.last_tokens, other.last_tokens])

    def select(self, index: torch.Tensor) -> None:
        """Keep only the rows in `index` (in that order), then trim all-padding columns."""
        self.mask = self.mask.index_select(0, index)
        self.next_positions = self.next_positions.index_select(0, index)
        self.last_tokens = self.last_tokens.index_select(0, index)
        for layer in self.cache.layers:
            layer.select_rows(index)
        used = self.mask.any(dim=0)
        drop = int(used.int().argmax()) if bool(used.any()) else 0  # leading columns nobody uses
        if drop:
            self.mask = self.mask[:, drop:]
            for layer in self.cache.layers:
                layer.trim_left(drop)


def _pad_left(mask: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - mask.shape[1]
    if missing <= 0:
        return mask
    pad = torch.zeros((mask.shape[0], missing), dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=1)


def prefill_inputs(prompts: list[list[int]], pad_id: int, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids, attention mask, position ids), each [b, longest prompt]."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, longest - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[i, longest - len(prompt):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)
