"""`webtune refresh NAME [overrides]`: the refresh as one command a scheduler can run.

Exit codes (documented in docs/refresh.md): 0 the candidate was promoted, 3 the promoted version was
kept (nothing changed, or the candidate was not better: the reason is printed and recorded),
2 an error (one line), 1 a bug. `webtune resume` continues a refresh (commands.continue_refresh).
"""
from __future__ import annotations

import datetime as _dt
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from ..console import log
from ..errors import PaidRequestRefused, WebtuneError

KEPT = 3   # what commands.continue_refresh returns when the promoted version stays


def refresh_config(registry: str, name: str, overrides: list[str], from_base: bool):
    """The promoted version's saved config, the overrides on top, and the refresh section set."""
    from ..config import WebtuneConfig
    from ..deploy import registry as reg
    from ..hydra_setup import setup
    from .diff import promoted_run
    setup()
    cur = reg.read_current(registry, name)
    if cur is None:
        raise WebtuneError(f"{name}: no promoted version in {registry} to refresh; `webtune models promote "
                           f"{name} N` first")
    vdir = reg.resolve(registry, f"{name}@v{cur['version']}")
    refresh = {"model": f"{name}@v{cur['version']}", "version_dir": str(vdir.resolve()), "from_base": from_base}
    old_run = promoted_run(refresh)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(WebtuneConfig), OmegaConf.load(old_run / "config.yaml"),
                              OmegaConf.from_dotlist(list(overrides)), {"refresh": refresh})
    except Exception as exc:  # noqa: BLE001 - OmegaConf raises many kinds; one line names the key
        raise WebtuneError(f"refresh {name}: overrides {' '.join(overrides)}: {str(exc).splitlines()[0]}") from None
    stamp = _dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    cfg.source.acquisition = f"refresh of {refresh['model']} at {stamp}"   # a new collection, paid once
    cfg.registry.path = registry
    cfg.eval.compare_to = name          # the promoted version is scored on the same held-out items
    cfg.registry.auto_register = False
    if cfg.model.kind == "hf" and cfg.model.method in ("lora", "qlora") and not from_base:
        cfg.model.init_adapter = str(vdir.resolve() / "model")
        from ..train.warm_start import check_fits
        check_fits(cfg.model)   # refused in one line before anything is acquired or trained
    else:
        cfg.model.init_adapter = None
    return cfg


def cmd_refresh(ns) -> int:
    from ..commands import continue_refresh, refuse_problems
    from ..fileio import atomic_write_text
    from ..rundir import attach_run_log, new_run_dir
    cfg = refresh_config(ns.registry, ns.name, ns.overrides, ns.from_base)
    if ns.dry_run:
        return dry_run(cfg)
    refuse_problems(cfg)
    run_dir = new_run_dir(cfg.runs_dir, f"{cfg.name}_refresh")
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    attach_run_log(run_dir)
    return continue_refresh(cfg, run_dir)


def dry_run(cfg) -> int:
    """The diff and the plan, with nothing paid, trained or promoted (a scratch run directory)."""
    from ..runner import StageContext
    from ..console import console
    from ..stages import raw_inputs, run_source
    from . import diff
    with tempfile.TemporaryDirectory(prefix="refresh-dry-run-") as tmp:
        ctx = StageContext(cfg, Path(tmp), console, log)
        try:
            run_source(ctx, allow_paid=False)
        except PaidRequestRefused as exc:
            log(f"dry run of {cfg.refresh.model}: the diff needs a new collection, which bills (the plan is "
                f"above): nothing was requested. {exc}")
            return KEPT
        summary = diff.run(cfg, Path(tmp), raw_inputs)
    c = summary["counts"]
    start = "the base model" if not cfg.model.get("init_adapter") else f"the adapter of {cfg.refresh.model}"
    log(f"dry run of {cfg.refresh.model}: {c['new']} new, {c['changed']} changed, {c['same']} same, "
        f"{c['gone']} gone (key: {summary['key_field'] or 'content hash'}); a refresh would train "
        f"{c['new'] + c['changed']} new or changed records and replay {cfg.refresh.replay_share:.0%} of the "
        f"unchanged ones, starting from {start}; nothing was paid, trained or promoted")
    return KEPT
