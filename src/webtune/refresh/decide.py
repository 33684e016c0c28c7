"""The refresh's decision: promote the candidate only when the paired evidence says it is better.

Against the promoted version, on the same held-out items:
  new      the test set drawn from new and changed records: the candidate's loss must be
           significantly lower (the interval of the difference lies below 0)
  old      the promoted version's frozen test set: no significant regression
  general  the general test set: no significant regression
  grounding, generation measures: none significantly worse (unsupported values / attributes,
           chrF, ROUGE-L, checks)
The candidate is registered as the next version either way (its evidence stays inspectable, and a
person can still `models promote --force` it); only a decision to promote moves the serving
pointer, atomically, with the evidence in the registry's history. Writes decision.json.
"""
from __future__ import annotations

from pathlib import Path

from ..console import log
from ..fileio import read_json, write_json

DECISION = "decision.json"
GUARDED = ("domain_loss", "general_loss", "old_loss", "chrF", "rougeL", "unsupported_values",
           "unsupported_attributes")


def decide(evidence: dict, diff_counts: dict) -> tuple[bool, list[str]]:
    """(promote?, the reasons, one line each) from the candidate-vs-promoted comparisons."""
    if not diff_counts.get("new") and not diff_counts.get("changed"):
        return False, ["nothing new or changed since the promoted version"]
    reasons, ok = [], True
    new = evidence.get("domain_loss")
    if not new or new.get("diff") is None:
        return False, ["no paired loss on the new test set (it is empty: more new records are needed)"]
    if new["significant"] != "better":
        ok = False
        reasons.append(f"not better on the new records: {_line(new)}")
    else:
        reasons.append(f"better on the new records: {_line(new)}")
    for measure in GUARDED[1:]:
        c = evidence.get(measure)
        if c and c.get("significant") == "worse":
            ok = False
            items = ", ".join(c.get("worse_items", [])[:5])
            reasons.append(f"significantly worse: {_line(c)}" + (f"; items {items}" if items else ""))
    return ok, reasons


def _line(c: dict) -> str:
    ci = f", 95% CI {c['low']:+.3g} to {c['high']:+.3g}" if c.get("low") is not None else ""
    return f"{c['measure']} {c['old']:.4g} -> {c['new']:.4g} ({c['diff']:+.3g}{ci}, n={c['n']})"


def run(cfg, run_dir: Path, evidence: dict) -> dict:
    """Decide, register the candidate, promote it if decided; the decision file says what happened."""
    from ..deploy import registry as reg
    name = cfg.refresh.model.split("@")[0]
    counts = (read_json(run_dir / "data/refresh/diff.json", {}) or {}).get("counts", {})
    promote, reasons = decide(evidence, counts)
    version = registered_version(cfg.registry.path, name, run_dir) or reg.register(cfg.registry.path, name, run_dir)
    decision = {"refreshed": cfg.refresh.model, "candidate": f"{name}@v{version}", "promoted": False,
                "decided": "promote" if promote else "keep", "reasons": reasons, "diff": counts,
                "evidence": {k: {f: v.get(f) for f in ("old", "new", "diff", "low", "high", "n", "significant")}
                             for k, v in evidence.items() if isinstance(v, dict)}}
    if promote and cfg.refresh.promote:
        reg.promote(cfg.registry.path, name, version, force=False)
        decision["promoted"] = True
    reg.record_refresh(cfg.registry.path, name, {**decision, "run_dir": str(Path(run_dir).resolve())})
    write_json(run_dir / DECISION, decision)
    verb = "promoted" if decision["promoted"] else f"kept {cfg.refresh.model}"
    log(f"[bold]refresh[/bold]: {verb}: " + "; ".join(reasons))
    return decision


def no_change(cfg, run_dir: Path) -> bool:
    """When the diff found nothing new or changed, decide "keep" now (nothing to train) and say so."""
    from ..deploy import registry as reg
    counts = (read_json(run_dir / "data/refresh/diff.json", {}) or {}).get("counts", {})
    if counts.get("new") or counts.get("changed"):
        return False
    decision = {"refreshed": cfg.refresh.model, "candidate": None, "promoted": False, "decided": "keep",
                "reasons": ["nothing new or changed since the promoted version"], "diff": counts, "evidence": {}}
    reg.record_refresh(cfg.registry.path, cfg.refresh.model.split("@")[0],
                       {**decision, "run_dir": str(Path(run_dir).resolve())})
    write_json(run_dir / DECISION, decision)
    log(f"[bold]refresh[/bold]: kept {cfg.refresh.model}: nothing new or changed ({counts.get('same', 0)} same, "
        f"{counts.get('gone', 0)} gone)")
    return True


def registered_version(registry: str, name: str, run_dir: Path) -> int | None:
    """The version this run was already registered as (a resumed refresh registers once)."""
    from ..deploy import registry as reg
    try:
        versions = reg.show(registry, name)["versions"]
    except Exception:  # noqa: BLE001 - no such model yet
        return None
    here = str(Path(run_dir).resolve())
    return next((v["version"] for v in versions if v["source"].get("run_dir") == here), None)
