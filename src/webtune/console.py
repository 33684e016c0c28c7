"""One rich console for the whole process, a log that also goes to the run's run.log, and the one
progress display."""
from __future__ import annotations

import contextlib
import logging
import re
from typing import Iterator

from rich.console import Console
from rich.errors import LiveError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .redaction import redact

console = Console(stderr=True, highlight=False, soft_wrap=True)
_file_log = logging.getLogger("webtune")
_MARKUP = re.compile(r"\[/?[a-z ]+\]")


def log(message: str) -> None:
    message = redact(message)
    console.print(message)
    _file_log.info(_MARKUP.sub("", message))


def _shared() -> Console:
    return console   # the module's console, where a parameter of that name hides it


@contextlib.contextmanager
def progress(*columns, console: Console | None = None, transient: bool = False) -> Iterator[Progress]:
    """The one rich progress set-up: on webtune's console (or the one given), with a bar, n/total and
    the time by default; silent rather than failing when another live display is already showing."""
    columns = columns or (TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=console or _shared(), transient=transient)
    try:
        bar.start()
    except LiveError:   # e.g. a stage that runs inside another stage's display
        bar = Progress(*columns, console=console or _shared(), disable=True)
    try:
        yield bar
    finally:
        bar.stop()
