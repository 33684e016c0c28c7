"""One rich console for the whole process, and a log that also goes to the run's run.log."""
from __future__ import annotations

import logging
import re

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)
_file_log = logging.getLogger("webtune")
_MARKUP = re.compile(r"\[/?[a-z ]+\]")


def log(message: str) -> None:
    console.print(message)
    _file_log.info(_MARKUP.sub("", message))
