"""A memory estimate printed with the plan, so a user knows before training whether it fits.

The model's shape comes from its config alone (built on the meta device: no weights are loaded or
downloaded), so the estimate is ready before the weights are. Per device, in GiB:

- weights: bf16/fp32 as configured; QLoRA stores linear layers in 4-bit NF4 (0.5 byte plus
  double-quantised constants), embeddings, norms and the LM head stay in the compute dtype;
- trainable state: gradient + AdamW's two moments for what is trained (LoRA adapters are kept in
  fp32 by peft: 4+4+8 bytes; full fine-tuning in bf16 keeps bf16 grads and moments: 2+2+2);
- activations: per token and layer, the inputs of every matmul in a pre-norm transformer block
  (about 10 x hidden + 4 x intermediate elements) without checkpointing, only the layer input
  with it (plus one layer recomputed); eager attention adds the score matrix; a 4D block mask
  for sdpa/eager costs rows x L x L bytes per attention type;
- logits: rows x L x vocab in the compute dtype, their fp32 copy for the loss and its gradient.
Framework overhead (CUDA context, allocator slack: ~1-2 GiB) is not included.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

GIB = 1024 ** 3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BYTES = 0.5 + 1 / 64 * 0.5 + 1 / (64 * 256) * 4  # 4-bit values + fp8 block absmax + fp32 second-level


@dataclass
class ModelShape:
    n_params: int
    linear_params: int       # inside nn.Linear layers except the LM head (what QLoRA quantises)
    lora_params: int         # adapter parameters the LoRA config would add
    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    attention_types: int     # distinct layer types needing their own mask (Gemma 3: 2)


def _text_config(cfg):
    return getattr(cfg, "text_config", None) or cfg


def model_shape(config, target_modules=(), exclude_modules: str | None = None, r: int = 16) -> ModelShape:
    """Count parameters of a transformers config by building the model on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings()
    linear = lora = 0
    targets = set(target_modules)
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or mod is head:
            continue
        linear += mod.weight.numel()
        leaf = name.rsplit(".", 1)[-1]
        if leaf in targets and not (exclude_modules and re.fullmatch(exclude_modules, name)):
            lora += r * (mod.in_features + mod.out_features)
    t = _text_config(config)
    layer_types = getattr(t, "layer_types", None) or []
    return ModelShape(n_params=n_params, linear_params=linear, lora_params=lora,
                      layers=t.num_hidden_layers, hidden=t.hidden_size,
                      intermediate=getattr(t, "intermediate_size", 4 * t.hidden_size),
                      heads=t.num_attention_heads, vocab=t.vocab_size,
                      attention_types=max(1, len(set(layer_types))))


def estimate(shape: ModelShape, method: str, dtype: str, rows: int, seq_len: int, checkpointing: bool,
             attn_implementation: str = "sdpa", shards: int = 1) -> dict:
    """GiB per device for one micro-batch of `rows` packed rows of `seq_len` tokens.
    `shards`: devices that FSDP spreads weights and optimizer state over (1 for DDP)."""
    b = BYTES.get(dtype, 4)
    if method == "qlora":
        weights = shape.linear_params * NF4_BYTES + (shape.n_params - shape.linear_params) * b
    else:
        weights = shape.n_params * b
    if method in ("lora", "qlora"):
        weights += shape.lora_params * 4
        trainable, state = shape.lora_params, shape.lora_params * (4 + 8)
    else:
        trainable = shape.n_params
        state = shape.n_params * (3 * b)  # grad + AdamW m, v in the weights' dtype
    weights, state = weights / shards, state / shards

    tokens = rows * seq_len
    per_token_layer = (10 * shape.hidden + 4 * shape.intermediate) * b
    if attn_implementation == "eager":
        per_token_layer += 2 * shape.heads * seq_len * b  # scores and probabilities
    if checkpointing:
        activations = tokens * (shape.layers * shape.hidden * b + per_token_layer)
    else:
        activations = tokens * shape.layers * per_token_layer
    if "flash" not in attn_implementation and attn_implementation != "flex_attention":
        activations += rows * seq_len * seq_len * shape.attention_types  # the 4D block-diagonal mask
    logits = tokens * shape.vocab * (b + 4 + 4)
    total = weights + state + activations + logits
    return {"params": shape.n_params, "trainable_params": trainable,
            "weights_gib": round(weights / GIB, 3), "grads_optimizer_gib": round(state / GIB, 3),
            "activations_gib": round(activations / GIB, 3), "logits_gib": round(logits / GIB, 3),
            "total_gib": round(total / GIB, 3), "rows": rows, "seq_len": seq_len, "method": method,
            "dtype": dtype, "checkpointing": checkpointing, "shards": shards}


def device_memory_gib() -> float | None:
    """Total memory of the first CUDA device, or None on a machine without one."""
    import torch
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / GIB


def describe(est: dict, available_gib: float | None = None) -> str:
    """One line for the plan, with a warning when the estimate exceeds the device."""
    line = (f"memory estimate {est['total_gib']:.1f} GiB per device (weights {est['weights_gib']:.1f}, "
            f"grads+AdamW {est['grads_optimizer_gib']:.1f}, activations {est['activations_gib']:.1f}, "
            f"logits {est['logits_gib']:.1f}; {est['rows']} x {est['seq_len']} tokens per micro-batch)")
    if available_gib is not None:
        if est["total_gib"] > 0.95 * available_gib:
            line += (f" - [red]more than this GPU's {available_gib:.0f} GiB[/red]: raise model.train.grad_accum, "
                     f"lower mix.max_seq_len, turn on gradient_checkpointing or use method=qlora")
        else:
            line += f" of {available_gib:.0f} GiB"
    return line


def as_dict(shape: ModelShape) -> dict:
    return asdict(shape)
