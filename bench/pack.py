"""Packing benchmark: webtune's whole-set best-fit-decreasing plan against TRL's pack_dataset("bfd").

  python bench/pack.py                 # 1M lengths, max 2048 (a few minutes: TRL dominates)
  python bench/pack.py --n 100000      # quick look
  python bench/pack.py --skip-trl      # ours only

Lengths come from bench/gen/gen_lengths.py (cached under bench/data/). Each variant runs
in its own process, so its time and peak RSS are its own; TRL runs through the shared peer script
bench/peers/trl_pack.py with int32 token ids, the SFTTrainer way (1,000-row map
batches, input_ids + labels) and over the whole set at once.
Targets (issue 6): efficiency >= 99.95%, plan <= 5 s, peak RSS <= 1 GiB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
GEN, PEERS = HERE / "gen", HERE / "peers"   # the vendored generator and peer script
TRL_VARIANTS = {"sft_bfd": "TRL bfd, SFTTrainer way",   # 1,000-row map batches, input_ids + labels
                "global_bfd": "TRL bfd, whole set"}

# Runs in a child process: load the cached lengths, plan, report time and efficiency.
OURS = r"""
import json, sys, time
import numpy as np
from webtune.mix.pack import efficiency, plan_bfd
lengths = np.load(sys.argv[1])
cap = int(sys.argv[2])
t = time.perf_counter()
bins = plan_bfd(lengths, cap)
plan_s = time.perf_counter() - t
json.dump({"plan_s": plan_s, "rows": len(bins), "efficiency": efficiency(lengths, bins, cap)},
          open(sys.argv[3], "w"))
"""


def lengths_file(n: int, max_len: int) -> tuple[Path, Path]:
    """The gen_lengths.py text file (what TRL's script reads) and an .npy copy (what ours reads)."""
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    txt = data / f"lengths_{n}_{max_len}.txt"
    npy = txt.with_suffix(".npy")
    if not txt.exists():
        with open(txt, "w") as fh:
            subprocess.run([sys.executable, str(GEN / "gen_lengths.py"), "--n", str(n),
                            "--max-len", str(max_len)], stdout=fh, check=True)
    if not npy.exists():
        np.save(npy, np.loadtxt(txt, dtype=np.int64))
    return txt, npy


def run_child(cmd: list[str]) -> tuple[int, float, int]:
    """Run a process; return its exit status, wall seconds and peak RSS in bytes (wait4's ru_maxrss)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, time.perf_counter() - t, usage.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--trl-variants", default="sft_bfd,global_bfd")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    console = Console(width=130)
    txt, npy = lengths_file(a.n, a.max_len)
    total = int(np.load(npy).sum())
    console.print(f"{a.n:,} examples, {total:,} tokens, rows of {a.max_len}; "
                  f"lower bound {-(-total // a.max_len):,} rows")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ours.json"
        with console.status("webtune plan_bfd ..."):
            rc, wall, rss = run_child([sys.executable, "-c", OURS, str(npy), str(a.max_len), str(out)])
        if rc:
            sys.exit(f"webtune planner failed (exit {rc})")
        r = json.loads(out.read_text())
        results.append({"variant": "webtune plan_bfd, whole set", "efficiency": r["efficiency"], "rows": r["rows"],
                         "pack_s": r["plan_s"], "prep_s": None, "peak_rss": rss})  # the whole process

        for v in ([] if a.skip_trl else a.trl_variants.split(",")):
            out = Path(tmp) / f"{v}.json"
            free = psutil.virtual_memory().available
            with console.status(f"{TRL_VARIANTS[v]} ... ({free / 2**30:.1f} GiB free)"):
                rc, wall, rss = run_child([sys.executable, str(PEERS / "trl_pack.py"), "--lengths",
                                           str(txt), "--variant", v, "--dtype", "int32", "--out", str(out)])
            if rc:  # e.g. killed for memory: say so in the table rather than stop
                results.append({"variant": TRL_VARIANTS[v], "error": f"exit {rc} after {wall:.0f} s, "
                                f"peak RSS {rss / 2**30:.1f} GiB"})
                continue
            r = json.loads(out.read_text())
            results.append({"variant": TRL_VARIANTS[v], "efficiency": r["efficiency"], "rows": r["packed_rows"],
                            "pack_s": r["pack_s"], "prep_s": r["materialise_s"], "peak_rss": rss,
                            "pack_rss": r["peak_rss_during_pack_MiB"] * 2**20, "trl": r["trl"]})

    ours = results[0]
    table = Table(title=f"Packing {a.n:,} lengths into rows of {a.max_len} (issue 6)")
    for col in ("variant", "efficiency", "rows", "pack s", "build s", "peak RSS", "RSS in pack",
                "time vs ours", "RSS vs ours"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in results:
        if "error" in r:
            table.add_row(r["variant"], r["error"], *[""] * 7)
            continue
        table.add_row(r["variant"], f"{r['efficiency']:.4%}", f"{r['rows']:,}", f"{r['pack_s']:.2f}",
                      "" if r["prep_s"] is None else f"{r['prep_s']:.1f}", f"{r['peak_rss'] / 2**20:,.0f} MiB",
                      f"{r['pack_rss'] / 2**20:,.0f} MiB" if "pack_rss" in r else "",
                      "" if r is ours else f"{r['pack_s'] / ours['pack_s']:.1f}x",
                      "" if r is ours else f"{r['peak_rss'] / ours['peak_rss']:.1f}x")
    console.print(table)
    ok = ours["efficiency"] >= 0.9995 and ours["pack_s"] <= 5 and ours["peak_rss"] <= 2**30
    console.print(f"targets (efficiency >= 99.95%, plan <= 5 s, peak RSS <= 1 GiB): {'met' if ok else 'NOT met'}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
