#!/usr/bin/env python3
"""prepare.executor=local vs prepare.executor=ray on gen_products.py records (issue 19), in one run.

  python bench/prepare_ray.py                          # 20k once, 200k in two interleaved rounds
  python bench/prepare_ray.py --sizes 20000 --rounds 1 # a quick look

Cells: local and Ray at 1 and 2 workers, each in its own process, in the order local-1, ray-1,
local-2, ray-2 (reversed in the next round, so a change in the machine's load hits both engines).
The stage is the one bench/prepare.py times (parse, clean, filters, validate, render, exact + near
dedupe, ledger events; its config and copywriting task), then the ledger fold. Ray is a local Ray
started for the run on 127.0.0.1 (no dashboard, usage stats off); its start-up is reported apart
and left out of "records/s"; "with start-up" includes it. Peak memory is the summed RSS of the
cell's process tree (Ray's GCS, raylet and workers included), sampled from outside every 50 ms.
Every cell's data/examples.jsonl and ledger.jsonl are hashed: all cells of a size must agree.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from prepare import REPO, child, ensure_data, run_measured  # noqa: E402  (bench/prepare.py)

CELLS = [("local", 1), ("ray", 1), ("local", 2), ("ray", 2)]


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def cell(data: Path, work: Path, executor: str, workers: int) -> dict:
    run_dir = work / f"{executor}{workers}"
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(data), str(run_dir), str(workers), executor]
    wall, peak, out, cpu = run_measured(cmd, cwd=REPO, env={"RAY_USAGE_STATS_ENABLED": "0"})
    stats = json.loads(next(line for line in out.splitlines() if line.startswith("STATS "))[6:])
    n = sum(c["in"] for c in stats["sources"].values())
    startup = stats["seconds"].get("ray_startup", 0.0)
    if executor == "ray":  # the proof that Ray ran the shards, not a silent local fallback
        assert sorted(stats["ray"]["map"]) == [str(s) for s in range(stats["shards"])], stats["ray"]
    return {"executor": executor, "workers": workers, "records": n, "wall_s": wall, "startup_s": startup,
            "prepare_s": stats["prepare_s"], "records_per_s": n / max(1e-9, stats["prepare_s"] - startup),
            "with_startup": n / stats["prepare_s"], "peak_mib": peak / 2**20, "cpu_s": cpu,
            "examples": sha(run_dir / "data/examples.jsonl"), "ledger": sha(run_dir / "ledger.jsonl"),
            "seconds": stats["seconds"]}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"


def table(rows: list[dict]) -> str:
    head = ("| records | engine | workers | round | records/s | with start-up | Ray start-up s | map / reduce / write s "
            "| peak MiB | examples sha | ledger sha | load (1/5/15 min) |\n|" + "---|" * 12)
    lines = [head]
    for r in rows:
        s = r["seconds"]
        lines.append(f"| {r['records']:,} | {r['executor']} | {r['workers']} | {r['round']} | {r['records_per_s']:,.0f} | "
                     f"{r['with_startup']:,.0f} | {r['startup_s']:.1f} | {s['map']:.1f} / {s['reduce']:.1f} / {s['write']:.1f} | "
                     f"{r['peak_mib']:,.0f} | {r['examples']} | {r['ledger']} | {r['load']} |")
    return "\n".join(lines)


def break_even(rows: list[dict]) -> str:
    """From two sizes: time = fixed + n / rate per engine at 2 workers; where Ray's line crosses local's."""
    by = {}
    for r in rows:
        if r["workers"] == 2:
            by.setdefault((r["executor"], r["records"]), []).append(r["prepare_s"])
    sizes = sorted({n for _, n in by})
    if len(sizes) < 2:
        return "break-even: needs two sizes"
    lo, hi = sizes[0], sizes[-1]
    fit = {}
    for eng in ("local", "ray"):
        t_lo, t_hi = min(by[(eng, lo)]), min(by[(eng, hi)])
        per = (t_hi - t_lo) / (hi - lo)
        fit[eng] = (t_lo - per * lo, per)
    (a_l, b_l), (a_r, b_r) = fit["local"], fit["ray"]
    text = (f"2 workers, fitted time = fixed + per-record: local {a_l:.1f} s + {b_l * 1e6:.0f} µs/record, "
            f"Ray {a_r:.1f} s + {b_r * 1e6:.0f} µs/record (start-up included)")
    if b_r < b_l:
        return text + f"; Ray pays off above ~{(a_r - a_l) / (b_l - b_r):,.0f} records on this machine"
    return text + "; Ray's per-record cost is not lower, so on one machine it never pays off: it is for more cores or nodes"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="20000,200000")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the largest size (smaller sizes: one)")
    ap.add_argument("--work", default="/tmp/webtune-bench-prepare-ray")
    ap.add_argument("--child", nargs=4)
    a = ap.parse_args()
    if a.child:
        return child(Path(a.child[0]), Path(a.child[1]), int(a.child[2]), a.child[3])
    work = Path(a.work)
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = []
    for n in sizes:
        data, _ = ensure_data(work / "data", n)
        for rnd in range(1, (a.rounds if n == max(sizes) else 1) + 1):
            for executor, workers in (CELLS if rnd % 2 else CELLS[::-1]):
                r = cell(data, work / f"n{n}", executor, workers) | {"round": rnd, "load": load()}
                rows.append(r)
                print(f"{n:>8,} {executor:5} x{workers} round {rnd}: {r['records_per_s']:8,.0f} rec/s "
                      f"(start-up {r['startup_s']:.1f} s) peak {r['peak_mib']:,.0f} MiB  load {r['load']}", flush=True)
        same = {(r["examples"], r["ledger"]) for r in rows if r["records"] == n}
        print(f"{n:,}: examples.jsonl and ledger.jsonl identical in every cell: {len(same) == 1}", flush=True)
        if len(same) != 1:
            raise SystemExit(f"{n:,} records: the engines disagree: {same}")
    print()
    print(table(rows))
    print()
    print(break_even(rows))


if __name__ == "__main__":
    main()
