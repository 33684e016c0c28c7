"""Errors meant for people: one line saying what went wrong, where, and how to fix it."""
import os


class WebtuneError(Exception):
    """A problem the user can fix. The CLI prints it as one line, without a traceback."""


class PaidRequestRefused(WebtuneError):
    """A source's acquire(..., allow_paid=False) would have started a billed request (a Bright Data trigger)."""


def check_local_path(name_or_path: str, what: str) -> None:
    """A name that is clearly a local path but missing fails at once, instead of asking the hub."""
    from pathlib import Path
    p = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or (len(p.parts) > 1 and Path(p.parts[0]).is_dir())
    if looks_local and not p.exists():
        raise WebtuneError(f"{what} {name_or_path!r} does not exist (relative paths are taken from "
                           f"{Path.cwd()}; run from the project root or give an absolute path)")


def wants_traceback() -> bool:
    return os.environ.get("WEBTUNE_VERBOSE") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    if isinstance(exc, WebtuneError):
        return text
    return f"{exc.__class__.__name__}: {' '.join(text.split())}"
