"""Errors meant for people: one line saying what went wrong, where, and how to fix it."""
import errno
import os

from .redaction import redact


class WebtuneError(Exception):
    """A problem the user can fix. The CLI prints it as one line, without a traceback."""


class PaidRequestRefused(WebtuneError):
    """A source's acquire(..., allow_paid=False) would have started a billed request (a Bright Data trigger)."""


def wants_traceback() -> bool:
    return os.environ.get("WEBTUNE_VERBOSE") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(exc: BaseException) -> str:
    """The error as people see it: its message on one line, any secret in it masked."""
    text = redact(str(exc).strip()) or exc.__class__.__name__
    if isinstance(exc, WebtuneError):
        return text
    if isinstance(exc, OSError) and exc.errno in _FULL:
        where = f" writing {exc.filename}" if exc.filename else ""
        return (f"{exc.strerror}{where}: free space on that disk, or set runs_dir to a folder on another disk "
                f"(stage caches live in runs_dir/.cache)")
    return f"{exc.__class__.__name__}: {' '.join(text.split())}"


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}   # no room: the disk, the quota, or a file size limit
