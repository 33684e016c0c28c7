"""`webtune models|chat|serve`: thin argument parsing over registry.py, chat.py and serve.py."""
from __future__ import annotations

import argparse
import json

from rich.table import Table

from ..console import console
from . import registry as reg

DEFAULT_REGISTRY = "runs/registry"


def models(args: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="webtune models")
    ap.add_argument("--registry", default=DEFAULT_REGISTRY)
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("list")
    p = sub.add_parser("show")
    p.add_argument("name")
    p = sub.add_parser("register")
    p.add_argument("name")
    p.add_argument("run_dir")
    p = sub.add_parser("promote")
    p.add_argument("name")
    p.add_argument("version", help="N or vN")
    p.add_argument("--force", action="store_true", help="promote even if the run's eval thresholds failed")
    p = sub.add_parser("rollback")
    p.add_argument("name")
    p = sub.add_parser("delete")
    p.add_argument("name")
    p.add_argument("version", nargs="?")
    p.add_argument("--force", action="store_true")
    a = ap.parse_args(args)
    version = lambda v: int(str(v).lstrip("v")) if v is not None else None  # noqa: E731
    if a.action == "list":
        table = Table(title=f"models in {a.registry}")
        rows = reg.list_models(a.registry)
        for col in (rows[0].keys() if rows else ["name"]):
            table.add_column(str(col))
        for row in rows:
            table.add_row(*[str(v) for v in row.values()])
        console.print(table)
    elif a.action == "show":
        print(json.dumps(reg.show(a.registry, a.name), indent=2, default=str))
    elif a.action == "register":
        v = reg.register(a.registry, a.name, a.run_dir)
        print(f"registered {a.name}@v{v}")
    elif a.action == "promote":
        print(json.dumps(reg.promote(a.registry, a.name, version(a.version), force=a.force), default=str))
    elif a.action == "rollback":
        print(json.dumps(reg.rollback(a.registry, a.name), default=str))
    elif a.action == "delete":
        reg.delete(a.registry, a.name, version(a.version), force=a.force)
        print(f"deleted {a.name}{'@v' + str(version(a.version)) if a.version else ''}")
    return 0


def chat(args: list[str]) -> int:
    from .chat import main
    main(args)
    return 0


def serve(args: list[str]) -> int:
    from .serve import main
    if args and not args[0].startswith("-") and len(args) == 1:
        args = [DEFAULT_REGISTRY] + args          # `webtune serve NAME`
    elif "--name" in args:                          # `webtune serve --name NAME [--registry R]`
        i = args.index("--name")
        name = args[i + 1]
        rest = args[:i] + args[i + 2:]
        registry = DEFAULT_REGISTRY
        if "--registry" in rest:
            j = rest.index("--registry")
            registry = rest[j + 1]
            rest = rest[:j] + rest[j + 2:]
        args = [registry, name] + rest
    main(args)
    return 0
