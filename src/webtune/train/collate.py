"""Packed rows -> causal-LM batches in which no token attends across examples.

A row is a list of examples `{"input_ids": [...], "labels": [...]}` (labels -100 outside the loss
mask). Every example gets position ids from 0, and its first label is masked (nothing before it
in the row may predict it). How attention is kept inside each example depends on the kernel:

- sdpa / eager: a 4D block-diagonal causal mask `[batch, 1, L, L]` passed as `attention_mask`
  (transformers uses a 4D mask as-is). Position ids alone do not isolate: transformers only
  derives document masks from them when no cache is built (`use_cache=False`). Models with
  sliding-window layers get the window in the mask (a `{layer_type: mask}` dict where layer
  types differ, as in Gemma 3).
- flash_attention_*: the batch is flattened to one row with no padding and restarting position
  ids, which transformers turns into varlen `cu_seqlens`.
- flex_attention: no mask; transformers builds the document BlockMask from the restarting
  position ids, which needs the model run with `use_cache=False` (set `model.config.use_cache`).

Rows are padded to the longest row of the batch: pad tokens get label -100 and a block of their
own, so no query row is ever fully masked (which would give NaNs).
"""
from __future__ import annotations

from typing import Sequence

import torch

IGNORE = -100


def _is_flash(impl: str) -> bool:
    return "flash" in impl  # flash_attention_2/3, kernels-community/flash-attn*


class PackedCollator:
    def __init__(self, attn_implementation: str = "sdpa", pad_token_id: int = 0,
                 dtype: torch.dtype = torch.float32, sliding_window: int | None = None,
                 layer_types: Sequence[str] | None = None, pad_to_multiple_of: int | None = None):
        """`sliding_window` and `layer_types` come from the model config (see `for_model`);
        `dtype` is the model's compute dtype, for eager's additive float mask."""
        self.attn_implementation = attn_implementation
        self.pad_token_id = pad_token_id
        self.dtype = dtype
        self.sliding_window = sliding_window
        self.layer_types = sorted(set(layer_types)) if layer_types else None
        self.pad_to_multiple_of = pad_to_multiple_of

    @classmethod
    def for_model(cls, model, pad_token_id: int | None = None, **kw) -> "PackedCollator":
        cfg = model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        if pad_token_id is None:
            pad_token_id = getattr(cfg, "pad_token_id", None)
            pad_token_id = 0 if pad_token_id is None else pad_token_id
        layer_types = getattr(cfg, "layer_types", None)
        return cls(attn_implementation=model.config._attn_implementation, pad_token_id=pad_token_id,
                   dtype=model.dtype, sliding_window=getattr(cfg, "sliding_window", None),
                   layer_types=layer_types if layer_types and len(set(layer_types)) > 1 else None, **kw)

    def __call__(self, rows: Sequence[Sequence[dict]]) -> dict:
        ids, labels, pos, seg = [], [], [], []
        for r, row in enumerate(rows):
            if isinstance(row, dict):  # an unpacked example is a row of one
                row = [row]
            i_r, l_r, p_r, s_r = [], [], [], []
            for e, ex in enumerate(row):
                x, y = ex["input_ids"], ex["labels"]
                if not len(x) or len(x) != len(y):
                    raise ValueError(f"row {r}, example {e}: input_ids has {len(x)} tokens and labels "
                                     f"{len(y)}; they must be equal and non-zero")
                i_r.extend(x)
                l_r.append(IGNORE)  # the previous example's last token must not predict this one
                l_r.extend(y[1:])
                p_r.extend(range(len(x)))
                s_r.extend([e] * len(x))
            ids.append(i_r), labels.append(l_r), pos.append(p_r), seg.append(s_r)

        if _is_flash(self.attn_implementation):
            flat = lambda rows_: torch.tensor([[t for row in rows_ for t in row]], dtype=torch.long)  # noqa: E731
            return {"input_ids": flat(ids), "labels": flat(labels), "position_ids": flat(pos)}

        width = max(len(r) for r in ids)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        for i_r, l_r, p_r, s_r in zip(ids, labels, pos, seg):
            n = width - len(i_r)
            i_r.extend([self.pad_token_id] * n)
            l_r.extend([IGNORE] * n)
            p_r.extend(range(n))
            s_r.extend([s_r[-1] + 1] * n)  # padding is a block of its own
        batch = {"input_ids": torch.tensor(ids, dtype=torch.long),
                 "labels": torch.tensor(labels, dtype=torch.long),
                 "position_ids": torch.tensor(pos, dtype=torch.long)}
        if self.attn_implementation != "flex_attention":
            batch["attention_mask"] = self.attention_mask(torch.tensor(seg))
        return batch

    def attention_mask(self, seg: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """4D mask from per-token block ids `[batch, L]`: bool for sdpa, additive float for eager."""
        full = block_causal_mask(seg)
        window = self.sliding_window
        sliding = None
        if window and window < seg.shape[1]:
            sliding = block_causal_mask(seg, window)
        if self.layer_types:  # mixed layers (Gemma 3): one mask per layer type
            masks = {t: (sliding if sliding is not None and t == "sliding_attention" else full)
                     for t in self.layer_types}
            return {t: self._to_kernel(m) for t, m in masks.items()}
        return self._to_kernel(sliding if sliding is not None else full)

    def _to_kernel(self, mask: torch.Tensor) -> torch.Tensor:
        if self.attn_implementation == "sdpa":
            return mask
        out = torch.zeros(mask.shape, dtype=self.dtype)
        return out.masked_fill_(~mask, torch.finfo(self.dtype).min)


def block_causal_mask(seg: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """`[batch, 1, L, L]` bool: query q sees key k when both are in the same block, k <= q,
    and (with a sliding window) q - k < window, as transformers' sliding layers do."""
    L = seg.shape[1]
    q = torch.arange(L).view(L, 1)
    k = torch.arange(L).view(1, L)
    allowed = k <= q
    if window:
        allowed = allowed & (q - k < window)
    same = seg[:, :, None] == seg[:, None, :]
    return (same & allowed).unsqueeze(1)
