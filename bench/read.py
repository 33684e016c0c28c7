#!/usr/bin/env python3
"""Reading `gen_products.py --n 1000000` as JSONL, JSON array and CSV: records/s and peak RSS.

Each measurement runs in its own process (peak RSS = that process's ru_maxrss, so one format's
memory never hides another's). Ours is `webtune.sources.files.iter_records` (orjson per line for
JSONL, ijson streaming for JSON, csv with list cells split for CSV), every item turned into a
Record or a Rejection. The peers are what one would write with the standard library: json.loads
per line, json.load of the whole file (run on a smaller file: on the 1M file it needs many GB),
csv.DictReader. JSONL is also read by 2 workers at once, each taking its byte range.

  python bench/read.py [--n 1000000] [--peer-json-n 100000] [--repeat 2] [--data bench/data]
Data files are generated once into --data (git-ignored) and reused.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

GEN = Path(__file__).resolve().parents[1] / "bench/gen/gen_products.py"


CSV_FIELDS = ["url", "asin", "title", "brand", "description", "features", "initial_price",
              "final_price", "currency", "rating", "reviews_count", "categories", "availability"]


def ensure(data: Path, n: int, fmt: str) -> Path:
    """The n-record file in this format. JSONL comes from gen_products.py; the JSON array and the
    CSV are converted from it with gen_products.py's own writing rules (same records, same bytes
    for JSON), which is much faster than generating three times on a busy 2-core machine."""
    path = data / f"products_{n}.{fmt}"
    if path.exists():
        return path
    tmp = path.with_suffix(f".{fmt}.tmp")
    if fmt == "jsonl":
        print(f"generating {path} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(GEN), "--n", str(n), "--format", fmt, "--out", str(tmp)], check=True)
    else:
        source = ensure(data, n, "jsonl")
        print(f"converting {source.name} to {path.name} ...", file=sys.stderr, flush=True)
        with open(source, "rb") as src:
            if fmt == "json":
                with open(tmp, "wb") as out:
                    out.write(b"[\n")
                    for i, line in enumerate(src):
                        out.write((b",\n" if i else b"") + line.rstrip(b"\n"))
                    out.write(b"\n]\n")
            else:
                import csv

                with open(tmp, "w", encoding="utf-8", newline="") as out:
                    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
                    writer.writeheader()
                    for line in src:
                        rec = json.loads(line)
                        if isinstance(rec, dict):
                            writer.writerow({k: (" | ".join(v) if isinstance(v, list) else v) for k, v in rec.items()})
    tmp.rename(path)
    return path


# ---------------------------------------------------------------- children
def child(kind: str, path: str, shard: int, n_shards: int) -> dict:
    records = rejections = 0
    if kind == "ours":
        from omegaconf import OmegaConf

        from webtune.config import FilesConfig
        from webtune.records import Record
        from webtune.sources import files

        cfg = OmegaConf.structured(FilesConfig(paths=[path], csv_list_fields=["features", "categories"]))
    t = time.perf_counter()  # after imports: the rate is the reading alone
    if kind == "ours":
        for item in files.iter_records(cfg, "bench", files.resolve(cfg), shard, n_shards):
            if isinstance(item, Record):
                records += 1
            else:
                rejections += 1
    elif kind == "peer-jsonl":
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    obj = json.loads(line)
                except ValueError:
                    rejections += 1
                    continue
                records += isinstance(obj, dict)
                rejections += not isinstance(obj, dict)
    elif kind == "peer-json":
        with open(path, "rb") as fh:
            for obj in json.load(fh):
                records += isinstance(obj, dict)
                rejections += not isinstance(obj, dict)
    elif kind == "peer-csv":
        import csv

        csv.field_size_limit(2**31 - 1)
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                for name in ("features", "categories"):
                    row[name] = row[name].split(" | ") if row[name] else []
                records += 1
    seconds = time.perf_counter() - t
    return {"records": records, "rejections": rejections, "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(kind: str, path: Path, shard: int = 0, n_shards: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", kind, str(path), str(shard), str(n_shards)],
                            stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a benchmark child failed ({proc.args})")
    return json.loads(out)


def run(kind, path, shard=0, n_shards=1):
    return result(measure(kind, path, shard, n_shards))


def best_pair(path, peer_kind, repeat):
    """Ours and the peer, alternately `repeat` times, the fastest of each: the machine is shared,
    so alternating keeps a burst of load from landing on one side only."""
    ours, peer = [], []
    for _ in range(repeat):
        ours.append(run("ours", path))
        if peer_kind:
            peer.append(run(peer_kind, path))
    fastest = lambda runs: min(runs, key=lambda r: r["seconds"]) if runs else None  # noqa: E731
    return fastest(ours), fastest(peer)


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--peer-json-n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2, help="runs of ours and of the peer, alternating; the fastest counts")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent / "data"))
    ap.add_argument("--child", nargs=4, metavar=("KIND", "PATH", "SHARD", "N_SHARDS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, path, shard, n_shards = a.child
        print(json.dumps(child(kind, path, int(shard), int(n_shards))))
        return

    from rich.console import Console
    from rich.table import Table

    data = Path(a.data)
    data.mkdir(parents=True, exist_ok=True)
    big = {fmt: ensure(data, a.n, fmt) for fmt in ("jsonl", "json", "csv")}
    small_json = ensure(data, a.peer_json_n, "json")

    rows = []  # (label, file, result, peer_result)

    def add(label, path, ours, peer=None):
        rows.append((label, path, ours, peer))

    add("JSONL, 1 worker", big["jsonl"], *best_pair(big["jsonl"], "peer-jsonl", a.repeat))
    both = [result(p) for p in [measure("ours", big["jsonl"], s, 2) for s in range(2)]]
    add("JSONL, 2 workers (byte ranges)", big["jsonl"],
        {"records": sum(b["records"] for b in both), "rejections": sum(b["rejections"] for b in both),
         "seconds": max(b["seconds"] for b in both), "peak_rss_mb": max(b["peak_rss_mb"] for b in both)})
    add("JSON array", big["json"], *best_pair(big["json"], None, 1))
    add(f"JSON array ({a.peer_json_n:,} records)", small_json, *best_pair(small_json, "peer-json", a.repeat))
    add("CSV", big["csv"], *best_pair(big["csv"], "peer-csv", a.repeat))

    table = Table(title=f"Reading gen_products.py output, one process per cell "
                        f"({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    for col in ("input", "size", "records", "rejected", "records/s", "peak RSS", "peer", "peer records/s",
                "peer peak RSS", "speed vs peer", "RSS peer/ours"):
        table.add_column(col, justify="left" if col in ("input", "peer") else "right")
    peers = {"JSONL": "json.loads per line", "JSON": "json.load (whole file)", "CSV": "csv.DictReader"}
    for label, path, ours, peer in rows:
        rate = ours["records"] / ours["seconds"]
        cells = [label, f"{path.stat().st_size / 2**20:,.0f} MiB", f"{ours['records']:,}", f"{ours['rejections']:,}",
                 f"{rate:,.0f}", f"{ours['peak_rss_mb']:,.0f} MiB"]
        if peer:
            prate = peer["records"] / peer["seconds"]
            cells += [peers[label.split()[0].rstrip(",")], f"{prate:,.0f}", f"{peer['peak_rss_mb']:,.0f} MiB",
                      f"{rate / prate:.2f}x", f"{peer['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x"]
        else:
            cells += ["", "", "", "", ""]
        table.add_row(*cells)
    Console(width=220).print(table)
    worst = max(r[2]["peak_rss_mb"] for r in rows)
    print(f"peak RSS, worst of ours: {worst:,.0f} MiB (target < 500 MB): {'met' if worst < 500 else 'NOT met'}")


if __name__ == "__main__":
    main()
