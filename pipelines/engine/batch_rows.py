"""The running rows of a continuous batch: KV cache, masks and next-token logits, row by row.

Every row is left-padded to the batch's width (its prompt and generated tokens are contiguous
at the right, pads masked at the left), as `transformers.generate` lays out a batch: a row
attends, positions and slides its attention window exactly as it would alone. Rows leave when
they finish; newcomers, prefilled on their own, join by padding the narrower side on the left;
columns that every row masks are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _pad_layer_left(layer, columns: int) -> None:
    # keys/values: [B, H, S, D]; a sliding-window layer keeps only its last window - 1 columns
    if columns == 0:
        return
    zeros = layer.keys.new_zeros(layer.keys.shape[:2] + (columns,) + layer.keys.shape[3:])
    layer.keys = torch.cat([zeros, layer.keys], dim=-2)
    layer.values = torch.cat([zeros.to(layer.values.dtype), layer.values], dim=-2)
    if getattr(layer, "is_sliding", False):
        layer.keys = layer.keys[:, :, -layer.sliding_window + 1:, :]
        layer.values = layer.values[:, :, -layer.sliding_window + 1:, :]
        layer.cumulative_length += columns


def _drop_layer_left(layer, columns: int) -> None:
    if columns == 0:
        return
    if getattr(layer, "is_sliding", False):
        layer.cumulative_length -= columns
        keep = min(layer.cumulative_length, layer.sliding_window - 1)
        layer.keys, layer.values = layer.keys[:, :, -keep:, :], layer.values[:, :, -keep:, :]
    else:
        layer.keys, layer.values = layer.keys[:, :, columns:, :], layer.values[:, :, columns:, :]


@dataclass
class BatchRows:
    """Rows that decode together. Each tensor's first dimension is the row."""

    cache: object  # transformers DynamicCache: per layer keys/values [B, H, S, D]
    mask: torch.Tensor  # [B, W] 1 for a real token, 0 for a pad
    next_pos: torch.Tensor  # [B, 1] position of each row's next token
    seen: torch.Tensor  # [B, W] token ids each row holds (pads: one of the row's tokens), for penalties
    logits: torch.Tensor  # [B, V] float32 logits of each row's next token

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def select(self, rows: torch.Tensor) -> None:
        """Keep these rows, in this order; a row may be taken more than once (samples of one prompt)."""
        self.cache.batch_select_indices(rows)
        self.mask, self.next_pos, self.seen, self.logits = (
            t[rows] for t in (self.mask, self.next_pos, self.seen, self.logits))
        self.drop_masked_columns()

    def drop_masked_columns(self) -> None:
        """Drop the leading columns that every row masks (left when the longest rows finished)."""
        real = self.mask.any(dim=0).nonzero()
        columns = int(real[0]) if len(real) else 0
        if columns:
            for layer in self.cache.layers:
                _drop_layer_left(layer, columns)
            self.mask, self.seen = self.mask[:, columns:], self.seen[:, columns:]

    def pad_left(self, columns: int) -> None:
        if columns == 0:
            return
        for layer in self.cache.layers:
            _pad_layer_left(layer, columns)
        self.mask = torch.cat([self.mask.new_zeros((len(self), columns)), self.mask], dim=1)
        # Pads repeat a token the row holds, so a repetition penalty sees nothing new.
        self.seen = torch.cat([self.seen[:, -1:].expand(-1, columns), self.seen], dim=1)

    def join(self, other: "BatchRows") -> None:
        """Append other's rows after these (other is consumed)."""
        width = max(self.width, other.width)
        self.pad_left(width - self.width)
        other.pad_left(width - other.width)
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
        self.mask, self.next_pos, self.seen, self.logits = (
            torch.cat([a, b]) for a, b in ((self.mask, other.mask), (self.next_pos, other.next_pos),
                                           (self.seen, other.seen), (self.logits, other.logits)))

    def crop(self, width: int) -> None:
        """Keep the first `width` columns of an unpadded row whose cache holds every column (no
        sliding-window layer has dropped any): a prompt's prefix, for a prompt that extends it."""
        for layer in self.cache.layers:
            if getattr(layer, "is_sliding", False):
                assert layer.cumulative_length < layer.sliding_window, "the window has dropped columns"
                layer.cumulative_length = width
            layer.keys, layer.values = layer.keys[:, :, :width, :], layer.values[:, :, :width, :]
        self.mask, self.seen = self.mask[:, :width], self.seen[:, :width]
        self.next_pos = self.next_pos.new_full(self.next_pos.shape, width)

    def append_tokens(self, tokens: torch.Tensor) -> None:
        """Extend masks for the tokens about to be decoded; tokens: [B]."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self), 1))], dim=1)
        self.seen = torch.cat([self.seen, tokens[:, None]], dim=1)
