"""`webtune list sources|templates|models`: what ships (and what your ./conf adds), one line each.

A config's description is the first sentence of the comment at the top of its YAML file, so the
list says what the file itself says; a user's `conf/<group>/NAME.yaml` (as `webtune init` writes)
is listed too, marked as theirs, and wins over a shipped one of the same name, as in a run.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import WebtuneError
from .paths import CONF_DIR

GROUPS = {"sources": "source", "templates": "template", "models": "model"}
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)(?<!etc)[.!?](?=\s|$)")  # not "e.g." nor "i.e."
WIDTH = 110


def entries(group: str, user_conf: Path | None = None) -> list[tuple[str, str, bool]]:
    """(name, one-line description, is the user's own) of each config in a group, by name."""
    found: dict[str, tuple[str, str, bool]] = {}
    for folder, yours in ((CONF_DIR / group, False), ((user_conf / group) if user_conf else None, True)):
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            found[path.stem] = (path.stem, describe(path), yours)
    return [found[k] for k in sorted(found)]


def describe(path: Path) -> str:
    """The first sentence of the file's leading comment (cut to one line), or '' when it has none."""
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(" ".join(lines).split())
    end = _SENTENCE_END.search(text)
    first = text[:end.end()] if end else text
    return first if len(first) <= WIDTH else first[:WIDTH].rsplit(" ", 1)[0] + " …"


def list_command(ns) -> int:
    groups = [ns.what] if ns.what else list(GROUPS)
    for what in groups:
        if what not in GROUPS:
            raise WebtuneError(f"webtune list {what}: say sources, templates or models")
        rows = entries(GROUPS[what], Path("conf") if Path("conf").is_dir() else None)
        key = GROUPS[what]
        print(f"{what} (use as {key}=NAME):")
        width = max((len(n) for n, _, _ in rows), default=0)
        for name, text, yours in rows:
            print(f"  {name.ljust(width)}  {text}{'  [your conf/]' if yours else ''}")
        if what != groups[-1]:
            print()
    return 0
