"""A memory estimate printed with the plan, so a user knows before training whether it fits."""
from __future__ import annotations

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "4bit": 0.5}


def estimate(n_params: int, n_trainable: int, method: str, dtype: str, layers: int, hidden: int,
             rows: int, seq_len: int, checkpointing: bool) -> dict:
    """Rough GiB for weights, gradients + AdamW state, and activations (per optimizer step)."""
    w_bytes = BYTES["4bit"] if method == "qlora" else BYTES.get(dtype, 4)
    weights = n_params * w_bytes
    grads_optim = n_trainable * (4 + 8 + (4 if dtype != "float32" else 0))  # grad + Adam m, v (+ fp32 master)
    # ~34 bytes per token per hidden unit per layer without checkpointing (Korthikanti et al.), ~2 with it
    per_layer = rows * seq_len * hidden * (2 if checkpointing else 34) * (BYTES.get(dtype, 4) / 2)
    activations = per_layer * layers
    gib = 1024 ** 3
    return {"weights_gib": round(weights / gib, 3), "grads_optimizer_gib": round(grads_optim / gib, 3),
            "activations_gib": round(activations / gib, 3),
            "total_gib": round((weights + grads_optim + activations) / gib, 3)}
