"""The report stage: RUN/metrics.json and a self-contained RUN/report.html (inline SVG, no CDN).

It reads the run directory only, so a report can be rebuilt from it; `sweep` and `compare` read runs
through the helpers here (`dig`, `read_overrides`, `headline`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from ..fileio import atomic_write_text, read_json, read_jsonl, write_json
from . import svg
from .html import render as render_html
REPORT_SECTIONS = ["summary", "data", "mix", "training", "evaluation", "evidence", "samples", "judge", "reproduce"]


# ---------------------------------------------------------------- one run
def collect(run_dir: Path) -> dict:
    """Every stage's stats and the evaluation, as RUN/metrics.json holds them."""
    stats = {p.stem: read_json(p) for p in sorted((run_dir / "stats").glob("*.json"))}
    ev = read_json(run_dir / "eval/metrics.json") or {}
    ledger = stats.get("ledger") or {"sources": {}, "reasons": []}
    return {"summary": " ".join(headline(ev)), "ledger": ledger, "prepare": stats.get("prepare", {}),
            "mix": stats.get("mix", {}), "train": stats.get("train", {}), "eval": ev,
            "timings": {k: seconds(v) for k, v in stats.items() if isinstance(v, dict) and seconds(v) is not None}}


def seconds(stats: dict) -> float | None:
    s = stats.get("seconds")
    if isinstance(s, dict):
        s = s.get("total")
    return float(s) if isinstance(s, (int, float)) else None


def significantly_worse(ev: dict) -> list[str]:
    """What got significantly worse, in words ("chrF per answer", "general test loss (nats/token) against
    the promoted version"), over every paired comparison of the evaluation."""
    out = []
    for label, comparison in (ev.get("evidence") or {}).items():
        against = label.split("_vs_", 1)[1]
        for measure, c in comparison.items():
            if c.get("significant") == "worse":
                out.append(c.get("name", measure) + ("" if against == "base" else f" (against the {against} version)"))
    return out


def headline(ev: dict, max_regression: float | None = None) -> list[str]:
    """The sentences a person reads first: domain gain with its interval, how general loss moved, what got
    significantly worse, the judge. It says "beats the base" only when the gate passed and nothing it
    reports got significantly worse."""
    out = []
    if not ev:
        return ["Not evaluated yet."]
    b, t = ev.get("base", {}), ev.get("tuned", {})
    worse = significantly_worse(ev)
    if ev.get("domain_gain") is not None:
        bd, td, gain, ci = b["domain"], t["domain"], ev["domain_gain"], ev.get("domain_gain_ci")
        if ev.get("status") == "passed" and not worse:
            verb = "The tuned model beats the base on domain test loss"
        elif ci and ci[0] > 0:
            verb = "The tuned model lowers the domain test loss"
        elif ci and ci[1] < 0:
            verb = "The tuned model does worse than the base on domain test loss"
        else:
            verb = "The tuned model's domain test loss is not shown to differ from the base's"
        interval = f", 95% CI {ci[0]:+.3f} to {ci[1]:+.3f}" if ci else ""
        out.append(f"{verb}: {bd['loss']:.3f} → {td['loss']:.3f} ({gain:+.3f} nats gain{interval}, "
                   f"n={td.get('examples')}; perplexity {bd['perplexity']:,.1f} → {td['perplexity']:,.1f})"
                   + (f", but significantly worse: {'; '.join(worse)}." if worse else "."))
    elif not ev.get("loss_available", True):
        out.append("Held-out loss is not available for a model tuned through the OpenAI API (it returns no "
                   "log-probabilities of a given answer); the generation metrics and the judge compare base and tuned.")
    if ev.get("general_change") is not None:
        bg, tg, change = b["general"], t["general"], ev["general_change"]
        moved = "rose" if change > 0 else "fell" if change < 0 else "did not move"
        ppl = 100 * (tg["perplexity"] / bg["perplexity"] - 1) if bg["perplexity"] else 0.0
        ci = ev.get("general_change_ci")
        interval = f", 95% CI {ci[0]:+.3f} to {ci[1]:+.3f}" if ci else ""
        limit = ""
        if max_regression is not None:
            low, high = ci or (change, change)
            where = "above" if low > max_regression else "within" if high <= max_regression else "straddling"
            limit = f", {where} the {max_regression} threshold"
        out.append(f"General test loss {moved} by {abs(change):.3f} nats ({bg['loss']:.3f} → {tg['loss']:.3f}{interval}, "
                   f"perplexity {ppl:+.0f}%){limit}.")
    gb, gt = b.get("generation") or {}, t.get("generation") or {}
    if gt:
        out.append(f"Generations: chrF {gb.get('chrF')} → {gt.get('chrF')}, ROUGE-L {gb.get('rougeL')} → {gt.get('rougeL')} "
                   f"(n={ev.get('n_generated')}).")
    if ev.get("status") == "inconclusive":
        out.append("Inconclusive: " + "; ".join(ev.get("undecided") or []) + ".")
    if ev.get("judge"):
        j = ev["judge"]
        out.append(f"The judge preferred the tuned answer in {100 * j['win_rate']:.0f}% of {j['pairs']} pairs "
                   f"(95% CI {100 * j['ci_low']:.0f}–{100 * j['ci_high']:.0f}%).")
    return out


def run(cfg, run_dir: Path) -> dict:
    metrics = collect(run_dir)
    metrics["name"] = cfg.name
    write_json(run_dir / "metrics.json", metrics)
    atomic_write_text(run_dir / "report.html", render(cfg, run_dir, metrics))
    return {"summary": metrics["summary"]}


def example_lengths(run_dir: Path) -> dict[str, list[int]]:
    """Token lengths of the training examples, domain and general apart (packed order = mix.json order)."""
    packed = run_dir / "data/packed/train.npz"
    if not packed.exists():
        return {}
    lengths = np.diff(np.load(packed)["offsets"]).tolist()
    ids = (read_json(run_dir / "data/mix.json") or {}).get("splits", {}).get("train", [])
    if len(ids) != len(lengths):
        return {"train": lengths}
    side = {}
    for line in (run_dir / "data/examples.jsonl").open("rb") if (run_dir / "data/examples.jsonl").exists() else []:
        ex = orjson.loads(line)
        side[ex["id"]] = ex.get("side", "domain")
    groups: dict[str, list[int]] = {}
    for i, n in zip(ids, lengths):   # an oversampled copy is `<example id>+<n>`
        groups.setdefault(side.get(i) or side.get(i.rsplit("+", 1)[0], "domain"), []).append(n)
    return groups


def reason_examples(run_dir: Path, limit: int = 200_000) -> dict[tuple, dict]:
    """The first rejected record per (source, stage, reason), so the report can show one."""
    found: dict[tuple, dict] = {}
    path = run_dir / "ledger.jsonl"
    if not path.exists():
        return found
    with open(path, "rb") as fh:
        for n, line in enumerate(fh):
            if n >= limit:
                break
            ev = orjson.loads(line)
            if ev.get("status") == "rejected":
                found.setdefault((ev["source"], ev["stage"], ev["reason"]), ev)
    return found


def read_rows(path: Path) -> list[dict]:
    """A JSONL file of the run's, or no rows when that stage has not written it yet."""
    return read_jsonl(path) if path.exists() else []


def read_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra/overrides.yaml"
    if not path.exists():
        return []
    import yaml
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def render(cfg, run_dir: Path, metrics: dict) -> str:
    ev, train, mix = metrics["eval"] or {}, metrics["train"], metrics["mix"]
    curve = train.get("loss_curve", [])
    loss_chart = svg.line_chart({"train loss": [(c["step"], c["loss"]) for c in curve if "loss" in c],
                                 "validation loss": [(c["step"], c["eval_loss"]) for c in curve if "eval_loss" in c]})
    sources = metrics["ledger"].get("sources", {})
    totals = {k: sum(c[k] for c in sources.values()) for k in ("in", "kept", "rejected")}
    examples = reason_examples(run_dir)
    reasons = [{**r, "example": examples.get((r["source"], r["stage"], r["reason"]))}
               for r in metrics["ledger"].get("reasons", [])]
    lengths = example_lengths(run_dir)
    length_stats = {k: {"n": len(v), "mean": float(np.mean(v)), "median": float(np.median(v)),
                        "p95": float(np.percentile(v, 95)), "max": max(v)} for k, v in lengths.items() if v}
    config_text = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    judge = ev.get("judge")
    return render_html(
        "report.html.j2", name=cfg.name, run_dir=str(run_dir), teacher=(metrics["prepare"] or {}).get("teacher"),
        prepare_sources=(metrics["prepare"] or {}).get("sources") or {},
        ev=ev or None, headline=headline(ev, cfg.eval.max_general_regression), ledger=metrics["ledger"], reasons=reasons,
        totals=totals, mix=mix, train=train, timings=metrics["timings"], overrides=read_overrides(run_dir),
        config_text=config_text, model=cfg.model.name_or_path, model_kind=cfg.model.kind, method=cfg.model.method,
        template=cfg.template.name, max_regression=cfg.eval.max_general_regression, min_gain=cfg.eval.min_domain_gain,
        samples=item_rows(read_rows(run_dir / "eval/samples.jsonl")), length_stats=length_stats,
        sources_chart=svg.stacked_bars({s: {"kept": c["kept"], "rejected": c["rejected"]} for s, c in sources.items()},
                                       {"kept": "#16a34a", "rejected": "#dc2626"}),
        reasons_chart=svg.bar_chart({f"{r['source']} · {r['reason']}": r["count"] for r in reasons}, color="#f87171"),
        mix_chart=mix_chart(mix), length_hist=svg.histogram(lengths), loss_chart=loss_chart,
        timing_chart=svg.bar_chart(metrics["timings"], fmt="{:.1f} s", color="#a78bfa"),
        loss_bars=svg.grouped_bars({f"{split} test loss": {m: dig(ev, f"{m}.{split}.loss") for m in ("base", "tuned")}
                                    for split in ("domain", "general")}, unit=" nats"),
        judge_chart=svg.interval(judge["win_rate"], judge["ci_low"], judge["ci_high"]) if judge else "",
        evidence=evidence_tables(ev, cfg.eval), items=item_rows(read_rows(run_dir / "eval/generations.jsonl")),
        worse=newly_failing(ev, run_dir),
        data_fixes=data_fixes(metrics), refresh=read_json(run_dir / "decision.json"), sections=REPORT_SECTIONS)


def evidence_tables(ev: dict, e) -> list[dict]:
    """One table per paired comparison (tuned vs base, tuned vs promoted): each measure's two values, the
    difference with its 95% interval as a small plot (with the gate's threshold where it has one)."""
    tables = []
    for label, comparison in (ev.get("evidence") or {}).items():
        new, old = label.split("_vs_", 1)
        rows = []
        for measure, c in comparison.items():
            if not c.get("n"):
                continue
            kind, name = c["kind"], c.get("name", measure)
            threshold = None
            if old == "base" and measure == "domain_loss":
                threshold = -e.min_domain_gain        # the difference is tuned - base loss: a gain is negative
            elif old == "base" and measure == "general_loss":
                threshold = e.max_general_regression
            rows.append({**c, "name": name, "percent": kind == "binary",
                         "plot": svg.paired_interval(c["diff"], c["low"], c["high"], c["significant"], threshold,
                                                     label=f"{name}: {new} - {old}")})
        tables.append({"label": label, "old": old, "new": new, "rows": rows})
    return tables


def highlight(text: str, spans: list[dict]):
    """The answer with the grounding detector's unsupported spans marked (a title says what each is)."""
    from markupsafe import Markup, escape
    out, at = [], 0
    for sp in sorted(spans or [], key=lambda sp: (sp["start"], -sp["end"])):
        if sp["start"] < at or sp["end"] > len(text):
            continue
        what = f"unsupported {sp['kind']}" + (f" (field {sp['field']})" if sp.get("field") else "")
        out += [escape(text[at:sp["start"]]), Markup(f"<mark class='{escape(sp['kind'])}' title='{escape(what)}'>"),
                escape(text[sp["start"]:sp["end"]]), Markup("</mark>")]
        at = sp["end"]
    out.append(escape(text[at:]))
    return Markup("").join(out)


MODELS = ("base", "tuned", "promoted")


def item_rows(generations: list[dict]) -> list[dict]:
    """Rows of eval/generations.jsonl as the report shows them: each model's answer with its spans highlighted."""
    rows = []
    for r in generations:
        answers = []
        for label in MODELS:
            if label in r:
                g = r.get(f"{label}_grounding") or {}
                answers.append({"label": label, "html": highlight(r[label], g.get("spans")), "chrF": r.get(f"{label}_chrF"),
                                "rougeL": r.get(f"{label}_rougeL"), "unsupported_values": g.get("unsupported_values"),
                                "unsupported_attributes": g.get("unsupported_attributes"),
                                "checks": r.get(f"{label}_checks") or {},
                                "unsupported_claims": [c["claim"] for c in r.get(f"{label}_claims") or []
                                                       if not c["supported"]]})
        rows.append({"id": r.get("id"), "prompt": r["prompt"][-1]["content"], "reference": r["reference"],
                     "answers": answers, "judge": r.get("judge")})
    return rows


def newly_failing(ev: dict, run_dir: Path) -> list[dict]:
    """The items each comparison's new model gets wrong where the old one got them right (pass/fail
    measures), and where it did worst on the continuous ones, with the prompt to find them by."""
    prompts = {r.get("id"): r["prompt"][-1]["content"] for r in read_rows(run_dir / "eval/generations.jsonl")}
    prompts.update({r["id"]: r.get("prompt", "") for r in read_rows(run_dir / "eval/items.jsonl") if r["id"] not in prompts})
    out = []
    for label, comparison in (ev.get("evidence") or {}).items():
        new, old = label.split("_vs_", 1)
        for measure, c in comparison.items():
            if c.get("worse_items") and (c["kind"] == "binary" or c.get("significant") == "worse"):
                out.append({"new": new, "old": old, "name": c.get("name", measure), "binary": c["kind"] == "binary",
                            "significant": c.get("significant"),
                            "entries": [{"id": i, "prompt": prompts.get(i, "")} for i in c["worse_items"]]})
    return out


def data_fixes(metrics: dict) -> dict:
    """What prepare and mix changed in the training data: targets trimmed, dropped or flagged by
    prepare.grounding, and examples removed as contaminated by a held-out set (ledger reasons)."""
    reasons = metrics["ledger"].get("reasons", [])
    contaminated: dict[str, int] = {}
    for r in reasons:
        if str(r.get("reason", "")).startswith("contaminated:"):
            contaminated[r["reason"]] = contaminated.get(r["reason"], 0) + r["count"]
    return {"grounding": (metrics.get("prepare") or {}).get("grounding") or {}, "contaminated": contaminated,
            "decontam": (metrics.get("mix") or {}).get("decontam") or {}}


def mix_chart(mix: dict) -> str:
    m = mix.get("mix") or {}
    if not m:
        return ""
    return svg.stacked_bars({"target": {"domain": 1 - m["target_general_share"], "general": m["target_general_share"]},
                             "realised": {"domain": 1 - m["realised_general_share"], "general": m["realised_general_share"]}},
                            {"domain": "#2563eb", "general": "#f59e0b"})


def dig(obj, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj
