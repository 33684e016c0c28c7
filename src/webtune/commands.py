"""The CLI's commands. Each takes its argument list and returns an exit code."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from .console import console, log
from .errors import WebtuneError, one_line, wants_traceback
from .hydra_setup import CONF_DIR, load_run_config, setup, split_config_dir, use_config_dir, validate_overrides
from .rundir import attach_run_log, use_cache
from .fileio import read_json


# ------------------------------------------------------------------ run
DATA_STAGES = {"source", "prepare", "mix", "ledger"}


def cmd_run(args: list[str], only: set[str] | None = None) -> int:
    cfg = validate_overrides(args)
    refuse_problems(cfg)
    from .train import distributed
    if distributed.is_distributed():  # accelerate launch / torchrun: one run directory for every process
        if "-m" in args or "--multirun" in args:
            raise WebtuneError("a sweep (-m) cannot run under accelerate launch: launch each run on its own")
        args = args + distributed.run_dir_overrides(cfg)
    import hydra
    from hydra.core.hydra_config import HydraConfig

    setup()

    args, config_dir = split_config_dir(args)
    use_config_dir(config_dir)

    failed_points = []

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def task(cfg):
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            execute(cfg, run_dir, fresh=True, only=only)
            return objective(run_dir)   # what a sweeper that optimizes (Hydra's Optuna plugin) minimizes
        except Exception as exc:  # noqa: BLE001 - one line for people, the traceback in run.log
            logging.getLogger("webtune").exception("run failed")
            if wants_traceback():
                raise
            console.print(f"[red]error:[/red] {one_line(exc)} (traceback in {run_dir / 'run.log'})")
            if HydraConfig.get().mode.name != "MULTIRUN":
                raise SystemExit(2 if isinstance(exc, WebtuneError) else 1)
            from .report.sweep import record_failure   # a sweep goes on; its summary marks the point failed
            record_failure(run_dir, exc, stopped_in(cfg, run_dir))
            failed_points.append(run_dir)
            return None

    if "-m" in args or "--multirun" in args:
        args = args + [sweep_dirname_override(args)]
    saved = sys.argv
    sys.argv = ["webtune"] + args
    try:
        task()
    finally:
        sys.argv = saved
    return 1 if failed_points else 0


def stopped_in(cfg, run_dir: Path) -> str | None:
    """The first enabled stage a run directory's manifest does not record as done."""
    from .rundir import MANIFEST
    from .stages import build_stages
    done = (read_json(run_dir / MANIFEST) or {}).get("stages", {})
    return next((s.name for s in build_stages() if s.enabled(cfg) and s.name not in done), None)


def cmd_prepare(args: list[str]) -> int:
    """The data stages only, into a run directory; a later `run` on the same overrides restores them
    from the cache, and `resume` on this directory continues with training."""
    return cmd_run(args, only=DATA_STAGES)


def cmd_validate(args: list[str]) -> int:
    cfg = validate_overrides(args)
    from .checks import problems
    found = problems(cfg)
    for line in found:
        console.print(f"[red]error:[/red] {line}", soft_wrap=True)
    if found:
        return 2
    console.print(f"[green]ok[/green]: {cfg.name} (source {cfg.source.name} ({cfg.source.kind}), template "
                  f"{cfg.template.name}, model {cfg.model.name} ({cfg.model.kind}, {cfg.model.method}))")
    return 0


def refuse_problems(cfg) -> None:
    """`webtune run` checks what `webtune validate` checks before its first stage."""
    from .checks import problems
    found = problems(cfg)
    if found:
        more = f" (and {len(found) - 1} more: run `webtune validate` with the same overrides)" if len(found) > 1 else ""
        raise WebtuneError(found[0] + more)


def sweep_dirname_override(args: list[str]) -> str:
    """Name sweep jobs by the swept keys only (`0_model.train.learning_rate=1e-3`), not every override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    fixed = [ov.get_key_element() for ov in OverridesParser.create().parse_overrides(
        [a for a in split_config_dir(args)[0] if not a.startswith("-")]) if not ov.is_sweep_override()]
    return "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(fixed) + "]"


def objective(run_dir: Path, metric: str = "eval.tuned.domain.loss") -> float | None:
    """The run's tuned domain loss from metrics.json (None when it has none), as sweep_summary ranks."""
    value = read_json(run_dir / "metrics.json", {}) or {}
    for part in metric.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def execute(cfg, run_dir: Path, fresh: bool, only: set[str] | None = None) -> dict:
    """Run (or continue) the pipeline in run_dir."""
    from .runner import Runner
    from .stages import build_stages
    from .fileio import atomic_write_text
    from .train import distributed
    main = not distributed.is_distributed() or distributed.state().is_main_process
    if fresh and main:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if main:
        log(f"[bold]webtune[/bold] {cfg.name} -> {run_dir}")
    if distributed.is_distributed():
        from .runner import StageContext
        stages = build_stages()
        runner = Runner(cfg, run_dir, stages, console, log, use_cache=use_cache()) if main else None
        distributed.execute(runner, stages, only, lambda: StageContext(cfg, run_dir, console, log))
        if not main:
            return {}
        manifest = runner.manifest
    else:
        manifest = Runner(cfg, run_dir, build_stages(), console, log, use_cache=use_cache()).run(only)
    metrics = read_json(run_dir / "metrics.json", {})
    summary = metrics.get("summary")
    if summary:
        log(f"[green]done[/green]: {summary}")
    if (run_dir / "report.html").exists():
        log(f"report: {run_dir / 'report.html'}")
    elif only:
        log(f"data stages done: continue with `webtune resume {run_dir}`, or `webtune run` with the same "
            f"overrides (it restores them from the cache)")
    return manifest


# ------------------------------------------------------------------ resume / reproduce
def cmd_resume(ns) -> int:
    run_dir = existing_run_dir(ns.run_dir)
    cfg = load_run_config(run_dir)
    attach_run_log(run_dir)
    log(f"resuming {run_dir}")
    if cfg.refresh.model:   # a refresh: its exit code says whether it promoted
        return continue_refresh(cfg, run_dir)
    execute(cfg, run_dir, fresh=False)
    return 0


def continue_refresh(cfg, run_dir: Path) -> int:
    """Run or resume a `webtune refresh` (refresh/): the data stages first, nothing more when nothing
    changed; 0 when its candidate was promoted, 3 when the promoted version was kept."""
    from .refresh.decide import OUTCOME, no_change
    execute(cfg, run_dir, fresh=False, only={"source", "refresh"})
    if not no_change(cfg, run_dir):
        execute(cfg, run_dir, fresh=False)
    return 0 if (read_json(run_dir / OUTCOME, {}) or {}).get("promoted") else 3


def cmd_reproduce(ns) -> int:
    from .reproduce import reproduce
    run_dir = existing_run_dir(ns.run_dir)
    return reproduce(run_dir, data_only=True) if ns.data_only else reproduce(run_dir)


def existing_run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise WebtuneError(f"{run_dir} is not a directory; give a run directory under runs/")
    return run_dir


# ------------------------------------------------------------------ ledger
def cmd_ledger(a) -> int:
    from .ledger import read_ledger, section_fates, summarize_iter, summarize_sections
    run_dir = existing_run_dir(a.run_dir)
    lines = list(read_ledger(run_dir))
    if a.reason or a.source or a.id or a.page or a.section:
        shown = 0
        for ev in _ledger_matches(lines, a, section_fates):
            print(_ev_line(ev))
            shown += 1
            if shown >= a.limit and not (a.id or a.section):
                print(f"... (first {a.limit}; use --limit)")
                break
        if not shown:
            print("no record or section matches", file=sys.stderr)
        return 0
    counts, sections = summarize_iter(lines), summarize_sections(lines)
    _print_table(f"ledger of {run_dir}", ["source", "in", "kept", "rejected"],
                 [[name, c["in"], c["kept"], c["rejected"]] for name, c in counts["sources"].items()])
    _print_reasons("rejections by reason", counts["reasons"])
    if sections["sources"]:  # a page is kept if any of its sections is: what its sections lost is shown here
        _print_table("page sections (a page is kept if any section is; `--reason R` lists them)",
                     ["source", "pages", "sections", "kept", "rejected"],
                     [[name, c["pages"], c["sections"], c["kept"], c["rejected"]] for name, c in sections["sources"].items()])
        _print_reasons("rejected sections by reason", sections["reasons"])
    return 0


def _print_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.table import Table
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*map(str, row))
    console.print(t)


def _print_reasons(title: str, reasons: list[dict]) -> None:
    _print_table(title, ["source", "stage", "reason", "count"],
                 [[r["source"], r["stage"], r["reason"], r["count"]] for r in reasons])


def _ledger_matches(lines: list[dict], a, section_fates):
    """The lines (and page sections) the filters name: --reason and --source match either; --page
    gives a page's line then its sections; --section and --id one section or record."""
    for line in lines:
        if a.source and line["source"] != a.source:
            continue
        if a.page and a.page not in (line["id"], line["id"].split(":", 1)[-1].rsplit("#", 1)[0]):
            continue
        units = list(section_fates(line))
        if a.page:
            units = [line] + units
        elif not units or (a.id and line["id"] == a.id):
            units = [line]
        for ev in units:
            if a.reason and a.reason not in ev.get("reason", ""):
                continue
            if (a.section or a.id) and ev["id"] not in (a.section, a.id):
                continue
            yield ev


def _ev_line(ev: dict) -> str:
    extra = f" duplicate_of={ev['duplicate_of']}" if ev.get("duplicate_of") else ""
    detail = f" - {ev['detail']}" if ev.get("detail") else ""
    return f"{ev['id']}  {ev['status']}  {ev['stage']}:{ev.get('reason', '')}{extra}{detail}"


# ------------------------------------------------------------------ others
def cmd_preview(overrides: list[str], allow_trigger: bool = False, allow_teacher: bool = False) -> int:
    from .preview import preview
    return preview(overrides, allow_trigger=allow_trigger, allow_teacher=allow_teacher)


def cmd_eval(ns) -> int:
    from .rundir import merge_run_config
    run_dir = existing_run_dir(ns.run_dir)
    # the overrides go into RUN/config.yaml, so a later `resume` keys evaluate from what was run
    cfg = merge_run_config(run_dir, ns.overrides) if ns.overrides else load_run_config(run_dir)
    if ns.answers:   # answers produced elsewhere, scored on this run's held-out prompts
        from .evaluate.answers import score_answers
        score_answers(cfg, run_dir, Path(ns.answers))
        return 0
    attach_run_log(run_dir)
    execute(cfg, run_dir, fresh=False, only={"evaluate", "report"})
    return 0


def cmd_compare(ns) -> int:
    from .report import compare
    if len(ns.run_dirs) < 2:
        raise WebtuneError("usage: webtune compare RUN_A RUN_B [...] [--out compare.html]")
    out = Path(ns.out)
    compare.compare([existing_run_dir(r) for r in ns.run_dirs], out)
    print(out)
    return 0


def cmd_init(ns) -> int:
    from .init import write_starter
    for path in write_starter(ns.name, Path.cwd(), force=ns.force):
        print(f"wrote {path}")
    print(f"next: webtune preview source={ns.name} template={ns.name}   then: webtune run source={ns.name} "
          f"template={ns.name}")
    return 0
