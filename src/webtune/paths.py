"""Where webtune's shipped files live, and how a relative path in a config finds them.

`conf/`, `templates/` and `examples/` ship inside the package (found with importlib.resources, so a
wheel installed anywhere works). A relative path in a config is looked up in the working directory
first, so a user's own folder overrides or extends what ships.

Walking folders (`walk`, `safe_glob`) never follows a link into a folder it has already seen (by
(st_dev, st_ino)) nor out of the folder being walked: a symlink loop or a link to `/` cannot make a
`**` glob run for ever.
"""
from __future__ import annotations

import glob
import os
import re
from importlib.resources import files
from pathlib import Path

SHIPPED = Path(str(files("webtune")))
CONF_DIR = SHIPPED / "conf"


def _exists(path: str) -> bool:
    return os.path.exists(path) or bool(safe_glob(path))


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


# ---------------------------------------------------------------- the one rule for files a config names
def domain_folders() -> list[Path]:
    """Where a file a config names (a template, a schema, an include) may lie: the working directory,
    the user's config folder (--config-dir, else ./conf) and the folder holding it (a domain as
    `webtune init` lays it out), and webtune's shipped files. Never the filesystem root."""
    from hydra_plugins.webtune_searchpath import ENV   # set by hydra_setup.use_config_dir
    folders = [Path.cwd()]
    conf = os.environ.get(ENV) or ("conf" if os.path.isdir("conf") else None)
    if conf:
        conf = Path(conf).resolve()
        folders += [conf] + ([conf.parent] if conf.parent != conf.parent.parent else [])
    return list(dict.fromkeys(folders + [SHIPPED]))


def confined(path: Path | str, folders: list[Path] | None = None) -> bool:
    """Whether `path` (links resolved) lies inside one of `folders` (default: domain_folders())."""
    return any(inside(path, folder) for folder in (folders if folders is not None else domain_folders()))


# ---------------------------------------------------------------- walking folders
def inside(path: Path | str, folder: Path | str) -> bool:
    """Whether `path`, links resolved, lies in `folder` (links resolved too)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def walk(root: Path | str) -> tuple[list[Path], list[Path]]:
    """(files, links skipped) under `root`, hidden names left out. A link is followed only when it
    leads inside `root`, and into a folder only when that folder was not seen yet on this walk."""
    root = Path(root)
    files: list[Path] = []
    skipped: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink() and not inside(path, root):
                skipped.append(path)
            elif entry.is_dir():
                stack.append(path)
            elif entry.is_file():
                files.append(path)
    return files, skipped


def safe_glob(pattern: str, skipped: list[Path] | None = None) -> list[str]:
    """glob.glob(pattern, recursive=True), except that `**` walks with `walk` (files only there);
    the links it did not follow go to `skipped`."""
    if "**" not in pattern:
        return glob.glob(pattern)
    parts = pattern.split("/")
    first_magic = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = "/".join(parts[:first_magic]) or ("/" if pattern.startswith("/") else ".")
    regex = _glob_regex(parts[first_magic:])
    files, links = walk(base)
    out = []
    for f, is_link in [(f, False) for f in files] + [(f, True) for f in links]:
        rel = os.path.relpath(f, base).replace(os.sep, "/")
        if not regex.fullmatch(rel):
            continue
        if not is_link:
            out.append(str(f) if base != "." else rel)
        elif skipped is not None:
            skipped.append(f)
    return out


def _glob_regex(parts: list[str]) -> re.Pattern:
    """A glob's parts as one regex over a relative path: `**` any folders, `*` `?` `[...]` in one name."""
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        piece, j = "", 0
        while j < len(part):
            c = part[j]
            if c == "*":
                piece += "[^/]*"
            elif c == "?":
                piece += "[^/]"
            elif c == "[" and "]" in part[j + 1:]:
                end = part.index("]", j + 1)
                body = part[j + 1:end].replace("\\", "\\\\")
                piece += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                j = end
            else:
                piece += re.escape(c)
            j += 1
        out.append(piece + ("" if last else "/"))
    return re.compile("".join(out), re.S)


# ---------------------------------------------------------------- runs_dir
_SYSTEM = {"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/root", "/run", "/sbin",
           "/sys", "/usr", "/var", "/opt", "/srv", "/home", "/tmp", "/mnt", "/media"}


def runs_dir_problem(runs_dir: str) -> str | None:
    """Why `runs_dir` cannot hold run directories and the `.cache` beside them (None: it can): the
    filesystem root, a system folder itself (/usr, /etc, /tmp, ...), the home folder itself, or a
    path that is (or lies under) a file."""
    path = Path(os.path.expanduser(str(runs_dir))).resolve()
    if path == Path(path.anchor) or str(path) in _SYSTEM or path == Path.home().resolve():
        return (f"runs_dir={runs_dir!r} is {'the filesystem root' if path == Path(path.anchor) else 'a system or home folder'}"
                f" ({path}): runs and their .cache would be written there; give a folder of its own, e.g. runs_dir=runs")
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            return f"runs_dir={runs_dir!r}: {parent} is a file, not a folder; give a folder, e.g. runs_dir=runs"
    return None
