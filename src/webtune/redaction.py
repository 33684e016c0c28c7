"""One redaction for every secret that can come back in an error.

A provider may echo the key it refused ("Incorrect API key provided: sk-..."), a proxy the header
it saw ("Bearer ..."). Every client reads its key with `secret_env` (which remembers the value) and
passes what it says about an answer through `redact`; run.log's formatter (`RedactingFormatter`)
and the one-line error (`errors.one_line`) redact again, as a last line of defence. `redact`
masks, longest first: the values read through `secret_env`, the values of environment variables
whose names say they hold a secret (`*_API_KEY`, `*TOKEN*`, `*SECRET*`, ...), and the shapes of
common keys (OpenAI's `sk-`, Hugging Face's `hf_`, GitHub's `ghp_`, AWS's `AKIA`, a bearer token).
"""
from __future__ import annotations

import logging
import os
import re
import threading
from typing import Optional

MASK = "***"
_SECRET_NAME = re.compile(r"API_?KEY|_KEY$|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_KEY_SHAPES = re.compile(
    r"\bsk-[A-Za-z0-9_-]{8,}"                      # OpenAI and compatible servers (sk-, sk-proj-)
    r"|\bhf_[A-Za-z0-9]{20,}"                      # Hugging Face
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"               # GitHub
    r"|\bAKIA[0-9A-Z]{16}\b"                       # AWS access key id
    r"|(?<=Bearer )[A-Za-z0-9._~+/=-]{8,}")        # whatever follows `Bearer `
_MIN_REGISTERED, _MIN_NAMED = 4, 8  # shorter values would mask ordinary words ("true", "1")
_known: set[str] = set()
_lock = threading.Lock()


def secret_env(name: str) -> Optional[str]:
    """The value of env var `name` (stripped; None when unset or empty), remembered for `redact`."""
    value = (os.environ.get(name) or "").strip()
    if not value:
        return None
    remember(value)
    return value


def remember(value: str) -> None:
    """Mask `value` wherever `redact` runs from now on (in this process)."""
    if len(value) >= _MIN_REGISTERED:
        with _lock:
            _known.add(value)


def _secrets(also: tuple[Optional[str], ...]) -> list[str]:
    with _lock:
        values = set(_known)
    values.update(v.strip() for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v.strip()) >= _MIN_NAMED)
    values.update(v for v in also if v)
    return sorted(values, key=len, reverse=True)  # a key that contains another is masked whole


def redact(text: str, *also: Optional[str]) -> str:
    """`text` with every known secret (and each of `also`) replaced by ***."""
    if not text:
        return text
    for value in _secrets(also):
        text = text.replace(value, MASK)
    return _KEY_SHAPES.sub(MASK, text)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line (message and traceback) goes through `redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def redacting_formatter(format: Optional[str] = None, datefmt: Optional[str] = None) -> RedactingFormatter:
    """The factory logging's dictConfig calls (`(): webtune.redaction.redacting_formatter`)."""
    return RedactingFormatter(format, datefmt)
