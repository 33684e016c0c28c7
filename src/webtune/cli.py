"""`webtune run|resume|reproduce|preview|eval|compare|ledger|models|chat|serve`.

`run` hands its overrides to `@hydra.main`, so `-m` sweeps, `--config-dir` and `.hydra/` work as
in any Hydra app; our own flags (`--verbose`) are taken out first. Errors are one line; the
traceback only with `--verbose` or HYDRA_FULL_ERROR=1.
"""
from __future__ import annotations

import os
import sys

from .errors import WebtuneError

USAGE = """usage: webtune <command> [args]

  run [overrides] [-m]        run every stage (Hydra overrides; -m for a sweep)
  resume RUN_DIR              continue a killed run in its own directory
  reproduce RUN_DIR           rerun RUN_DIR/config.yaml into a new directory, compare data hashes
  preview [overrides] [n=5]   render a few examples with token counts and the loss mask
  eval RUN_DIR [overrides]    evaluate a past run again (e.g. eval.judge.enabled=true)
  compare RUN_A RUN_B         write a comparison report
  ledger RUN_DIR [--reason R] [--source S] [--id ID]
  models list|show|register|promote|rollback|delete ...
  chat TARGET                 NAME[@vN] | RUN_DIR | openai:MODEL_ID
  serve [--name NAME] [--port 8000]

  --verbose                   show tracebacks
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:
        os.environ["WEBTUNE_VERBOSE"] = "1"
    verbose = wants_traceback()
    argv = [a for a in argv if a != "--verbose"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, args = argv[0], argv[1:]
    try:
        from . import commands
        handler = getattr(commands, f"cmd_{command}", None)
        if handler is None:
            raise WebtuneError(f"unknown command {command!r}; run `webtune --help` for the list")
        return handler(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error reaches the user as one line
        if verbose:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        if not isinstance(exc, WebtuneError):
            print("       (run with --verbose for the traceback)", file=sys.stderr)
        return 2 if isinstance(exc, WebtuneError) else 1


def wants_traceback() -> bool:
    return os.environ.get("WEBTUNE_VERBOSE") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    if isinstance(exc, WebtuneError):
        return text
    return f"{exc.__class__.__name__}: {' '.join(text.split())}"


if __name__ == "__main__":
    sys.exit(main())
