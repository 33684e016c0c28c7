"""`webtune models|chat|serve`: the functions the CLI's parser calls with its argparse Namespace.

    serve_command(ns)   ns.target, registry, host, port, api_key_env, no_auth, max_tokens,
                        max_concurrency, queue_size, max_request_sequences, max_body_bytes, threads,
                        log_prompts
    chat_command(ns)    ns.target, registry, system, temperature, top_p, max_tokens, seed, base_url,
                        api_key_env
    models_command(ns)  ns.action (list|show|register|promote|rollback|delete), name, run_dir,
                        version, force, registry
Export is `webtune.deploy.export.export_command(ns)`.
"""
from __future__ import annotations

import json
from argparse import Namespace
from typing import Any, Optional

from rich.table import Table

from ..console import console
from ..errors import WebtuneError
from . import registry as reg, summary

DEFAULT_REGISTRY = "runs/registry"


def _get(ns: Namespace, key: str, default: Any = None) -> Any:
    """An attribute the parser may leave out (None counts as left out)."""
    value = getattr(ns, key, None)
    return default if value is None else value


def _version(v: Any) -> Optional[int]:
    if v is None:
        return None
    text = str(v).lstrip("v")
    if not text.isdigit():
        raise WebtuneError(f"version {v!r} is not N or vN (e.g. 2 or v2)")
    return int(text)


def models_command(ns: Namespace) -> int:
    registry, action, name = _get(ns, "registry", DEFAULT_REGISTRY), ns.action, _get(ns, "name")
    if action == "list":
        table = Table(title=f"models in {registry}")
        rows = reg.list_models(registry)
        for col in (rows[0].keys() if rows else ["name"]):
            table.add_column(str(col))
        for row in rows:
            table.add_row(*[str(v) for v in row.values()])
        console.print(table)
    elif action == "show":
        data = reg.show(registry, name)
        if _get(ns, "json"):
            print(json.dumps(data, indent=2, default=str))
        else:
            console.print(summary.show_table(data))
            console.print("\n".join(["recent moves:", *summary.history_lines(data)]) if data["history"] else "")
            if data.get("refreshes"):
                console.print("\n".join(["refreshes:", *summary.refresh_lines(data)]), soft_wrap=True)
    elif action == "register":
        print(f"registered {name}@v{reg.register(registry, name, ns.run_dir)}")
    elif action in ("promote", "rollback"):
        before = reg.read_current(registry, name)
        pointer = reg.promote(registry, name, _version(ns.version), force=bool(_get(ns, "force"))) \
            if action == "promote" else reg.rollback(registry, name)
        unchanged = before is not None and before["seq"] == pointer["seq"]
        print(json.dumps(pointer, default=str) if _get(ns, "json") else
              summary.moved(name, pointer, reg.show(registry, name), unchanged))
    elif action == "delete":
        version = _version(_get(ns, "version"))
        reg.delete(registry, name, version, force=bool(_get(ns, "force")))
        print(f"deleted {name}{'@v' + str(version) if version else ''}")
    else:
        raise WebtuneError(f"models: unknown action {action!r}; use list, show, register, promote, "
                           f"rollback or delete")
    return 0


def chat_command(ns: Namespace) -> int:
    from .chat import chat_repl

    chat_repl(ns.target, _get(ns, "registry", DEFAULT_REGISTRY), _get(ns, "system"),
              _get(ns, "temperature", 0.7), _get(ns, "top_p", 1.0), _get(ns, "max_tokens", 256),
              _get(ns, "seed"), _get(ns, "base_url"), _get(ns, "api_key_env"),
              engine=_get(ns, "engine", "transformers"), vllm_command=_get(ns, "vllm_command"))
    return 0


def vllm_settings(command: Optional[str], kv_cache_gib: Optional[float] = None):
    from .vllm_engine import VllmSettings

    defaults = VllmSettings()
    return VllmSettings(command=command, kv_cache_gib=kv_cache_gib or defaults.kv_cache_gib)


def serve_command(ns: Namespace) -> int:
    from .serve import ServeConfig, serve

    defaults = ServeConfig()
    config = ServeConfig(
        host=_get(ns, "host", defaults.host), port=_get(ns, "port", defaults.port),
        api_key_env=_get(ns, "api_key_env"), no_auth=bool(_get(ns, "no_auth")),
        max_tokens=_get(ns, "max_tokens", defaults.max_tokens),
        max_concurrency=_get(ns, "max_concurrency", defaults.max_concurrency),
        queue_size=_get(ns, "queue_size", defaults.queue_size), threads=_get(ns, "threads", defaults.threads),
        max_request_sequences=_get(ns, "max_request_sequences", defaults.max_request_sequences),
        max_body_bytes=_get(ns, "max_body_bytes", defaults.max_body_bytes),
        log_prompts=bool(_get(ns, "log_prompts")), engine=_get(ns, "engine", defaults.engine),
        system=_get(ns, "system"), vllm=vllm_settings(_get(ns, "vllm_command"), _get(ns, "vllm_kv_cache_gib")))
    serve(ns.target, _get(ns, "registry", DEFAULT_REGISTRY), config)
    return 0
