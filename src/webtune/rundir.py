"""The run directory: its name, its config, the git commit and package versions the manifest records."""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import logging
import os
import re
import subprocess
from pathlib import Path

from .fileio import atomic_write_text

MANIFEST = "manifest.json"


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


def attach_run_log(run_dir: Path) -> None:
    from .redaction import RedactingFormatter

    handler = logging.FileHandler(Path(run_dir) / "run.log")
    handler.setFormatter(RedactingFormatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def use_cache() -> bool:
    """WEBTUNE_NO_CACHE=1 runs every stage afresh (it still skips stages finished in this directory) and
    leaves the per-user caches (e.g. the base model's evaluate scores) alone."""
    return os.environ.get("WEBTUNE_NO_CACHE", "") not in ("1", "true", "yes")


@contextlib.contextmanager
def caches_off():
    """Every cache off for what runs inside, the per-user ones too (reproduce recomputes everything)."""
    before = os.environ.get("WEBTUNE_NO_CACHE")
    os.environ["WEBTUNE_NO_CACHE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("WEBTUNE_NO_CACHE")
        else:
            os.environ["WEBTUNE_NO_CACHE"] = before
