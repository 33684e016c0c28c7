"""Start LoRA training from an existing adapter (`model.init_adapter`; a refresh warm-starts from the
promoted version), after checking that it fits.

peft loads what matches and says nothing about the rest, so an adapter trained on another base, at
another rank or on other modules would start a "warm" run that is partly cold. `check_fits` refuses
that in one line before any weight loads (base fingerprint, rank, alpha, target modules), and
`load` checks after loading that every tensor in the adapter file is in the model, unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import base_model
from ..errors import WebtuneError
from ..fileio import sha256_text
from ..models import model_source

BASE_FILE = "webtune_base.json"   # written next to every adapter webtune saves


def base_fingerprint(model_cfg) -> str:
    """What identifies the base weights: the converted model's sha256 where webtune fetched it, else
    the folder's config.json and the names and sizes of its weight files."""
    source = Path(str(model_source(base_model.source_of(model_cfg))))
    prov = base_model.provenance(source)
    if prov and prov.get("sha256"):
        return prov["sha256"]
    if not source.is_dir():
        return str(source)   # a hub id: its name is all there is offline
    weights = sorted((p.name, p.stat().st_size) for p in source.iterdir()
                     if p.suffix in (".safetensors", ".bin", ".gguf"))
    config = (source / "config.json").read_text() if (source / "config.json").exists() else ""
    return sha256_text(json.dumps([config, weights]))


def write_base_file(adapter_dir: Path, model_cfg) -> None:
    (Path(adapter_dir) / BASE_FILE).write_text(json.dumps({"name_or_path": str(model_cfg.name_or_path),
                                                           "fingerprint": base_fingerprint(model_cfg)}))


def check_fits(model_cfg) -> None:
    """Refuse, in one line, an adapter that does not fit this model config."""
    path = Path(model_cfg.init_adapter)
    where = f"model.init_adapter={path}"
    if model_cfg.method not in ("lora", "qlora"):
        raise WebtuneError(f"{where}: a warm start needs model.method=lora or qlora (not {model_cfg.method})")
    try:
        adapter = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError):
        raise WebtuneError(f"{where}: no readable adapter_config.json (a LoRA adapter folder is needed; "
                           f"use --from-base to train from the base model)") from None
    base = json.loads((path / BASE_FILE).read_text()) if (path / BASE_FILE).exists() else None
    ours = base_fingerprint(model_cfg)
    if base is None or base["fingerprint"] != ours:
        was = base["name_or_path"] if base else adapter.get("base_model_name_or_path")
        raise WebtuneError(f"{where}: the adapter was trained on another base model ({was}), not "
                           f"{model_cfg.name_or_path}; use --from-base")
    wanted = {"r": model_cfg.lora.r, "lora_alpha": model_cfg.lora.alpha,
              "target_modules": sorted(model_cfg.lora.target_modules)}
    found = {"r": adapter.get("r"), "lora_alpha": adapter.get("lora_alpha"),
             "target_modules": sorted(adapter.get("target_modules") or [])}
    for key in wanted:
        if wanted[key] != found[key]:
            raise WebtuneError(f"{where}: the adapter has {key}={found[key]}, the config asks for {wanted[key]} "
                               f"(model.lora); match it, or use --from-base")


def load(model, model_cfg):
    """The base model with the adapter loaded trainable; every tensor of the adapter file checked."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    check_fits(model_cfg)
    path = Path(model_cfg.init_adapter)
    peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=True)
    saved = load_file(str(path / "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(peft_model)
    missing = sorted(set(saved) - set(loaded))
    differ = sorted(k for k in set(saved) & set(loaded) if not torch.equal(saved[k].to(loaded[k].dtype), loaded[k]))
    if missing or differ or len(saved) != len(loaded):
        bad = (missing or differ or sorted(set(loaded) - set(saved)))[0]
        raise WebtuneError(f"model.init_adapter={path}: adapter tensor {bad} did not load into the model "
                           f"({len(missing)} missing, {len(differ)} different, {len(saved)} in the file, "
                           f"{len(loaded)} in the model)")
    return peft_model
