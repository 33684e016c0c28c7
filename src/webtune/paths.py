"""Where webtune's shipped files live, and how a relative path in a config finds them.

`conf/`, `templates/` and `examples/` ship inside the package (found with importlib.resources, so a
wheel installed anywhere works). A relative path in a config is looked up in the working directory
first, so a user's own folder overrides or extends what ships.
"""
from __future__ import annotations

import glob
import os
from importlib.resources import files
from pathlib import Path

SHIPPED = Path(str(files("webtune")))
CONF_DIR = SHIPPED / "conf"


def _exists(path: str) -> bool:
    return os.path.exists(path) or bool(glob.glob(path, recursive=True))


def locate(spec: str | os.PathLike) -> Path:
    """`spec` as given when it exists from the working directory (or is absolute), else the shipped
    copy when that exists, else `spec` unchanged (so the caller's own error names what was asked)."""
    spec = os.path.expanduser(str(spec))
    if os.path.isabs(spec) or _exists(spec):
        return Path(spec)
    shipped = str(SHIPPED / spec)
    return Path(shipped) if _exists(shipped) else Path(spec)


def search_dirs(folder: Path | None = None) -> list[Path]:
    """Where a template include is looked for: its own folder, the working directory, the shipped files."""
    return [d for d in (folder, Path.cwd(), SHIPPED) if d is not None]
