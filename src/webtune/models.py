"""What train, evaluate and deploy share about loading a model: where its files are and which dtype
and attention it loads with."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import WebtuneError

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def looks_local(name_or_path: str) -> bool:
    """A name that is clearly a path on this machine rather than a hub id (`org/name`)."""
    p = Path(name_or_path).expanduser()
    return (name_or_path.startswith((".", "/", "~")) or p.exists() or len(p.parts) > 2
            or (len(p.parts) > 1 and Path(p.parts[0]).is_dir()))


def check_local_path(name_or_path: str, what: str) -> None:
    """A name that is clearly a local path but missing fails at once, instead of asking the hub."""
    if looks_local(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise WebtuneError(f"{what} {name_or_path!r} does not exist (relative paths are taken from "
                           f"{Path.cwd()}; run from the project root or give an absolute path)")


def resolve_dtype(name: str):
    import torch
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    if name not in DTYPES:
        raise WebtuneError(f"model.dtype={name!r}: use auto, float32, bfloat16 or float16")
    dtype = getattr(torch, DTYPES[name])
    if dtype == torch.float16 and not torch.cuda.is_available():
        raise WebtuneError("model.dtype=float16 trains only on a GPU; use bfloat16 or float32 on CPU")
    return dtype


def resolve_attn(name: str) -> str:
    """`auto`: flash-attention 2 when it is installed and a GPU is present, else PyTorch SDPA."""
    if name != "auto":
        return name
    import torch
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def model_source(name_or_path: str) -> str:
    """A local directory as an absolute path, so an adapter's `base_model_name_or_path` still
    points at its base from any working directory; a hub id unchanged."""
    check_local_path(name_or_path, "model")
    p = Path(name_or_path).expanduser()
    return str(p.resolve()) if p.is_dir() else name_or_path
