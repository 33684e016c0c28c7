"""Short human summaries for `webtune models show` and `promote`/`rollback` (`--json` prints the
registry's whole record instead): which version serves, each version's gate verdict and headline
numbers, its base model and licence, its exports, and the last moves of the serving pointer."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.table import Table

HISTORY_SHOWN = 5


def _signed(v) -> str:
    return "—" if v is None else f"{v:+.3f}"


def verdict(metrics: dict) -> str:
    ev = metrics.get("eval") or {}
    status = ev.get("status") or {True: "passed", False: "failed"}.get(ev.get("passed"))
    return status or "not evaluated"


def headline(metrics: dict) -> str:
    """`gate passed · domain gain +0.412 · general +0.021 · chrF 38.1`: one version's evidence."""
    ev = metrics.get("eval") or {}
    chrf = ((ev.get("tuned") or {}).get("generation") or {}).get("chrF")
    parts = [f"gate {verdict(metrics)}", f"domain gain {_signed(ev.get('domain_gain'))}",
             f"general {_signed(ev.get('general_change'))}"]
    return " · ".join(parts + ([f"chrF {chrf}"] if chrf is not None else []))


def base_of(metrics: dict) -> str:
    base = (metrics.get("train") or {}).get("base_model") or {}
    name = base.get("upstream") or base.get("name") or "—"
    return f"{name} ({base['licence']})" if base.get("licence") else name


def show_table(data: dict) -> Table:
    """`models show NAME`: one row per version, the serving one marked."""
    cur = data.get("current") or {}
    serving = cur.get("version")
    title = f"{data['name']}: " + (f"v{serving} serves (since {str(cur.get('at', '?'))[:16].replace('T', ' ')}, "
                                   f"{cur.get('action', 'promote')}"
                                   f"{', forced' if cur.get('forced') else ''})" if serving else "no version promoted yet")
    table = Table(title=title, title_justify="left")
    for col, justify in (("", "left"), ("version", "right"), ("gate", "left"), ("domain gain", "right"),
                         ("general change", "right"), ("steps", "right"), ("registered", "left"),
                         ("base model", "left"), ("exports", "left"), ("run", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for info in data.get("versions", []):
        m, src = info.get("metrics") or {}, info.get("source") or {}
        ev, train = m.get("eval") or {}, m.get("train") or {}
        exports = ", ".join(f"{e['format']}{'-' + e['quant'] if e.get('quant') else ''}" for e in info.get("exports", []))
        table.add_row("▶" if info["version"] == serving else "", f"v{info['version']}", verdict(m),
                      _signed(ev.get("domain_gain")), _signed(ev.get("general_change")), str(train.get("steps", "—")),
                      str(src.get("registered_at", "—"))[:16].replace("T", " "), info.get("openai_model") or base_of(m),
                      exports or "—", Path(src["run_dir"]).name if src.get("run_dir") else "—")
    return table


def history_lines(data: dict) -> list[str]:
    moves = data.get("history", [])[-HISTORY_SHOWN:]
    return [f"  {h['at'][:16]}  {h['action']} v{h['version']}" + (f" (from v{h['from']})" if h.get("from") else "")
            + (" forced" if h.get("forced") else "") for h in moves]


def refresh_lines(data: dict) -> list[str]:
    """`webtune refresh` decisions, newest last: what changed, what was decided, why."""
    out = []
    for r in data.get("refreshes", [])[-HISTORY_SHOWN:]:
        d = r.get("diff") or {}
        verb = f"promoted {r['candidate']}" if r.get("promoted") else f"kept {r.get('refreshed')}"
        out.append(f"  {str(r.get('at', ''))[:16]}  {verb} ({d.get('new', 0)} new, {d.get('changed', 0)} changed, "
                   f"{d.get('gone', 0)} gone): {'; '.join(r.get('reasons') or [])}")
    return out


def moved(name: str, pointer: dict, data: Optional[dict], unchanged: bool = False) -> str:
    """`promote`/`rollback`: what serves now, what served before, and the serving version's evidence."""
    version, before = pointer["version"], pointer.get("from")
    info = next((v for v in (data or {}).get("versions", []) if v["version"] == version), None)
    evidence = headline(info.get("metrics") or {}) if info else ""
    if unchanged:
        what = f"{name}: v{version} already serves"
    elif pointer.get("action") == "rollback":
        what = f"rolled {name} back to v{version}" + (f" (from v{before})" if before else "")
    else:
        what = f"promoted {name} to v{version}" + (f" (was v{before})" if before else "")
    forced = " (forced past its gate)" if pointer.get("forced") and not unchanged else ""
    return f"{what}{forced}; {evidence}" if evidence else f"{what}{forced}"
