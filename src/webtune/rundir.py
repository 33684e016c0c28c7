"""The run directory: its layout, content hashes, atomic writes and the manifest."""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
_UMASK = os.umask(0o22)
os.umask(_UMASK)


def new_run_dir(runs_dir: str | Path, name: str, now: _dt.datetime | None = None) -> Path:
    """`runs/<YYYY-MM-DD_HH-MM-SS>_<name>/`; a clash within the same second gets `-2`, `-3`..."""
    stamp = (now or _dt.datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    base = Path(runs_dir) / f"{stamp}_{slug(name)}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def slug(text: str, max_len: int = 80) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:max_len] or "run"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_path(path: Path) -> str:
    """A file's sha256, or for a directory the sha256 of its files' relative names and hashes."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a fresh file under a unique temporary name and rename it into place: a killed run never
    leaves half a file, and a file shared by hard links (the cache, another run) is never written
    through: the name gets a new inode, the old one keeps its bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link src at dst (a copy where links are impossible), replacing what dst was."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link a file or a folder's files."""
    files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
    for f in files:
        link_or_copy(f, dst if src.is_file() else dst / f.relative_to(src))


def copy_tree(src: Path, dst: Path) -> None:
    """Fresh copies (new inodes, writable) of a file or a folder's files."""
    files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
    for f in files:
        target = dst if src.is_file() else dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path, default=None):
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def merge_run_config(run_dir: Path, overrides: list[str]):
    """Apply `key=value` overrides to RUN/config.yaml, checked against the schema, and write it back
    (so a later `webtune resume` keys every stage from what was actually run); returns the config."""
    from omegaconf import OmegaConf

    from .config import WebtuneConfig
    from .errors import WebtuneError
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise WebtuneError(f"{path} not found: give a run directory made by `webtune run`")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(WebtuneConfig), OmegaConf.load(path),
                              OmegaConf.from_dotlist(list(overrides)))
    except Exception as exc:  # noqa: BLE001 - OmegaConf raises many kinds; one line names the key
        raise WebtuneError(f"{path}: overrides {' '.join(overrides)}: {str(exc).splitlines()[0]}") from None
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return cfg


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


PROVENANCE = ["webtune", "hydra-core", "omegaconf", "torch", "transformers", "peft", "accelerate",
              "tokenizers", "rensa", "datasketch", "trafilatura", "openai"]


def package_versions(names: list[str] | None = None) -> dict[str, str]:
    """Installed versions of these distributions (default: those the manifest records)."""
    from importlib import metadata
    out = {}
    for n in names or PROVENANCE:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=64)
def hub_revision(repo: str, repo_type: str = "model") -> str | None:
    """The commit a hub id resolves to: from the local hub cache, else asked of the hub (unless
    HF_HUB_OFFLINE); None for a local folder or when neither knows it (loading it would fail too)."""
    if not repo or Path(os.path.expanduser(repo)).exists():
        return None
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(repo, repo_type=repo_type, local_files_only=True)).name
    except Exception:  # noqa: BLE001 - not in the local cache (or not a hub id)
        pass
    if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "yes"):
        return None
    try:
        return HfApi().repo_info(repo, repo_type=repo_type, timeout=10).sha
    except Exception:  # noqa: BLE001 - no network, unknown repo
        return None
