"""The refresh's decision: promote the candidate only when the paired evidence says it is better.

Against the promoted version, on the same held-out items:
  new      the test set drawn from new and changed records: the candidate's loss must be
           significantly lower (the interval of the difference lies below 0)
  old      the promoted version's frozen test set: no significant regression
  general  the general test set: no significant regression
  grounding, generation measures: none significantly worse (unsupported values / attributes,
           chrF, ROUGE-L, checks)
`run` writes the decision (decision.json) before the report, which shows it; `act` then registers
the candidate as the next version either way (its evidence stays inspectable, and a person can still
`models promote --force` it), and only a decision to promote moves the serving pointer, atomically;
every outcome is a line in the registry's refreshes.jsonl and promotion.json.
"""
from __future__ import annotations

from pathlib import Path

from ..console import log
from ..errors import WebtuneError
from ..fileio import read_json, write_json

DECISION = "decision.json"     # what the evidence says (before the report, which shows it)
OUTCOME = "promotion.json"     # what was done: the version registered, promoted or not
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
    """Decide from the evaluation (decision.json, which the report shows); `promote` acts on it."""
    counts = (read_json(run_dir / "data/refresh/diff.json", {}) or {}).get("counts", {})
    promote, reasons = decide(evidence, counts)
    decision = {"refreshed": cfg.refresh.model, "decided": "promote" if promote else "keep", "reasons": reasons,
                "diff": counts,
                "evidence": {k: {f: v.get(f) for f in ("old", "new", "diff", "low", "high", "n", "significant")}
                             for k, v in evidence.items() if isinstance(v, dict)}}
    write_json(run_dir / DECISION, decision)
    return decision


def act(cfg, run_dir: Path) -> dict:
    """Register the candidate as the next version, promote it if decided (the registry's gate applies
    too), and record the outcome in the registry (refreshes.jsonl) and promotion.json."""
    from ..deploy import registry as reg
    decision = read_json(run_dir / DECISION)
    name = cfg.refresh.model.split("@")[0]
    version = registered_version(cfg.registry.path, name, run_dir) or reg.register(cfg.registry.path, name, run_dir)
    outcome = {**decision, "candidate": f"{name}@v{version}", "promoted": False}
    if decision["decided"] == "promote" and cfg.refresh.promote:
        try:
            reg.promote(cfg.registry.path, name, version, force=False)
            outcome["promoted"] = True
        except WebtuneError as exc:
            outcome["reasons"] = decision["reasons"] + [f"the registry's gate refused it: {exc}"]
    reg.record_refresh(cfg.registry.path, name, {**outcome, "run_dir": str(Path(run_dir).resolve())})
    write_json(run_dir / OUTCOME, outcome)
    verb = f"promoted {outcome['candidate']}" if outcome["promoted"] else f"kept {cfg.refresh.model}"
    log(f"[bold]refresh[/bold]: {verb}: " + "; ".join(outcome["reasons"]))
    return outcome


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
    write_json(run_dir / OUTCOME, decision)
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
