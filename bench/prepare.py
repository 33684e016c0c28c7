#!/usr/bin/env python3
"""The prepare stage on gen_products.py output (issue 5): records/s, peak RSS, dedupe quality,
side by side with datatrove, rensa and datasketch in the same run.

  python bench/prepare.py                         # 100k, 300k, 1M + peers on 200k (long: ~20 min)
  python bench/prepare.py --sizes 20000 --peer-size 20000 --no-datatrove    # a quick look
  python bench/prepare.py --compare /tmp/old/src --sizes 50000 --rounds 9    # an older commit vs this tree

--compare SRC runs the webtune cell alone, for the `src` of another checkout (a git worktree of an
older commit: `git worktree add /tmp/old <commit>`) and for this tree, in interleaved rounds (the
order alternates each round, so a change in the machine's load hits both), and prints medians with
their spread, the load average before and after, and whether both wrote the same bytes.

Each cell runs in its own process; peak RSS is the summed RSS of that process and its children,
sampled every 50 ms from outside. webtune runs the whole prepare stage: parse (sources/files.py),
clean (ftfy, HTML, whitespace), filters, validate (input schema with coercions), render (Jinja,
the copywriting task below), chat-format checks, exact + near dedupe, and the ledger events; the
fold of the ledger into ledger.jsonl (a runner step) is timed apart. Filters that run (the
language filter is off: the text is synthetic), Gopher-like as the datatrove script's, with its
relaxed minimum of 5 words:
  min_words 5, max_words 100000, duplicate line share 0.3, duplicate paragraph share 0.3,
  top 2-gram share 0.2, symbol/word ratio 0.1, blocklist (?i)lorem ipsum, (?i)click here to buy.
Dedupe: description field, word 5-shingles, 128 permutations, threshold 0.8 (16 bands x 8 rows).
Dedupe quality is computed from the generator's labels with the peers' own `dedup_metrics`
(peers/common.py), so recall means the same for every row.

Peers (a separate venv, see /work/shared/bench/peers/README.md): dt_pipeline.py (datatrove 0.10:
JSONL reader, Gopher repetition + quality filters, exact dedupe, 4-stage MinHash, 2 tasks) and
mem_minhash.py (rensa / datasketch MinHash LSH alone, one process, no filters or rendering).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("WEBTUNE_SHARED", REPO.parent / "shared"))
GEN = HERE / "gen" / "gen_products.py"  # the project's copy of the shared generator

BENCH_FILTERS = dict(min_words=5, max_words=100_000, max_dup_line_share=0.3, max_dup_para_share=0.3,
                     max_top_ngram_share=0.2, top_ngram_n=2, max_symbol_word_ratio=0.1,
                     blocklist=["(?i)lorem ipsum", "(?i)click here to buy"], length_field="description")


INPUT_SCHEMA = {
    "type": "object", "required": ["title", "brand", "description"],
    "properties": {"title": {"type": "string", "minLength": 3}, "brand": {"type": "string", "minLength": 1},
                   "description": {"type": "string", "minLength": 20},
                   "features": {"type": ["array", "null"], "items": {"type": "string"}},
                   "final_price": {"type": ["number", "null"]}, "rating": {"type": ["number", "null"]}}}


# ---------------------------------------------------------------- data
def ensure_data(folder: Path, n: int) -> tuple[Path, Path]:
    """p<n>.jsonl and l<n>.jsonl: the first n records of the seed-0 stream (a prefix of a larger file)."""
    folder.mkdir(parents=True, exist_ok=True)
    data, labels = folder / f"p{n}.jsonl", folder / f"l{n}.jsonl"
    if data.exists() and labels.exists():
        return data, labels
    bigger = sorted((int(p.stem[1:]) for p in folder.glob("p*.jsonl") if p.stem[1:].isdigit()
                     and int(p.stem[1:]) > n and (folder / f"l{p.stem[1:]}.jsonl").exists()))
    if bigger:  # the generator's stream does not depend on --n: a prefix is the smaller file
        for src, dst in ((folder / f"p{bigger[0]}.jsonl", data), (folder / f"l{bigger[0]}.jsonl", labels)):
            with open(src, "rb") as fi, open(dst, "wb") as fo:
                for _, line in zip(range(n), fi):
                    fo.write(line)
    else:
        subprocess.run([sys.executable, str(GEN), "--n", str(n), "--seed", "0", "--format", "jsonl",
                        "--out", str(data), "--labels", str(labels)], check=True)
    return data, labels


# ---------------------------------------------------------------- measuring
class TreeRss:
    """Peak summed RSS of a process and its descendants, sampled from this (other) process."""

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil
        self.proc, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil
        while not self._stop.is_set():
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_measured(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, int, str, float]:
    """Run a cell: (wall s, peak tree RSS, output, CPU s of the cell's whole process tree)."""
    t0, c0 = time.perf_counter(), os.times()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    rss = TreeRss(proc.pid)
    out, _ = proc.communicate()
    peak = rss.stop()
    wall = time.perf_counter() - t0
    c1 = os.times()  # children's CPU is counted once they are waited for (workers by their parent)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, peak, out, (c1[2] + c1[3]) - (c0[2] + c0[3])


# ---------------------------------------------------------------- the webtune cell (child process)
def child(data: Path, run_dir: Path, workers: int, executor: str = "local") -> None:
    from omegaconf import OmegaConf

    from webtune.config import FilesConfig, PrepareConfig, SourceConfig, TaskConfig, TemplateConfig, TurnConfig
    from webtune.ledger import fold
    from webtune.prepare import PrepareInput, run

    cfg = OmegaConf.create({"prepare": OmegaConf.structured(PrepareConfig(workers=workers, executor=executor))})
    cfg.prepare.ray.workers = workers  # executor=ray: a local Ray on 127.0.0.1, one actor per worker
    cfg.prepare.ray.num_cpus = os.cpu_count() or 1
    for key, value in BENCH_FILTERS.items():
        OmegaConf.update(cfg, f"prepare.filters.{key}", value)
    cfg.prepare.dedupe.fields = ["description"]
    source = OmegaConf.structured(SourceConfig(name="bench", files=FilesConfig(paths=[str(data)], format="jsonl")))
    # the copywriting task: title, brand and features in, the description out
    template = OmegaConf.structured(TemplateConfig(name="bench_copywriting", tasks=[TaskConfig(
        name="copywriting", system="You are an expert copywriter for an online store.",
        turns=[TurnConfig(role="user", text="Write a product description.\nTitle: {{ title }}\nBrand: {{ brand }}\n"
                                            "{% if features %}Features:\n{% for f in features %}- {{ f }}\n"
                                            "{% endfor %}{% endif %}"),
               TurnConfig(role="assistant", text="{{ description }}")],
        fields=["title", "brand", "description"])]))
    # the task's input schema, as templates/product_description/input.schema.json (coercions and all)
    schema = run_dir.parent / "bench_input.schema.json"
    schema.write_text(json.dumps(INPUT_SCHEMA))
    template.tasks[0].input_schema = str(schema)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    t0, c0 = time.perf_counter(), os.times()
    from dataclasses import fields

    from webtune.sources import iter_records
    reader = [iter_records] if "read" in {f.name for f in fields(PrepareInput)} else []  # an older commit: none
    stats = run(cfg, run_dir, [PrepareInput("domain", source, template, [data], *reader)])
    stats["prepare_s"] = time.perf_counter() - t0
    c1 = os.times()  # CPU seconds of this process and its (joined) workers: what the stage cost,
    stats["cpu_s"] = sum(c1[:4]) - sum(c0[:4])  # whatever else the machine was running
    t0 = time.perf_counter()
    fold(run_dir, ["prepare"])
    stats["fold_s"] = time.perf_counter() - t0
    print("STATS " + json.dumps(stats))


# ---------------------------------------------------------------- quality from labels
def quality(run_dir: Path, labels_path: Path, peers: Path) -> dict:
    sys.path.insert(0, str(peers))
    from common import dedup_metrics, load_labels  # the peers' own definitions

    labels = load_labels(labels_path)
    fate = {}
    with open(run_dir / "ledger.jsonl", "rb") as fh:
        import orjson
        for line in fh:
            ev = orjson.loads(line)
            fate[int(ev["id"].rsplit("#", 1)[1]) - 1] = ev
    line_of = lambda rid: int(rid.rsplit("#", 1)[1]) - 1  # noqa: E731
    eligible = {i for i, ev in fate.items() if ev["status"] == "kept" or ev["stage"] == "dedupe"}
    removed = {i: ev["reason"] for i, ev in fate.items() if ev["stage"] == "dedupe" and ev["status"] == "rejected"}
    cluster = {}
    for i, ev in fate.items():
        if i in removed:
            cluster[i] = cluster[line_of(ev["duplicate_of"])] = line_of(ev["duplicate_of"])
    m = dedup_metrics(labels, eligible, removed, cluster)
    kinds = collections.Counter(d["kind"] for d in labels)
    exact_kept = sum(1 for d in labels if d["kind"] == "exact_dup" and fate[d["index"]]["status"] == "kept")
    clean_removed = sum(1 for i in removed if labels[i]["kind"] == "clean")
    bad = collections.defaultdict(collections.Counter)
    for d in labels:
        if d["kind"].startswith("bad:") or d["kind"] == "error":
            ev = fate[d["index"]]
            if ev["status"] == "rejected":
                tag = f"{ev['stage']}:{ev['reason']}"
            else:
                tag = "+".join(["kept"] + sorted(set(ev.get("repairs", []))))
            bad[d["kind"]][tag] += 1
    return {"near_recall": m["near_recall"], "near_pairs_eligible": m["near_pairs_eligible"],
            "exact_dup_total": kinds["exact_dup"], "exact_dup_kept": exact_kept,
            "exact_dup_removed_share": m["exact_dup_removed_share"],
            "clean_total": kinds["clean"], "clean_removed_as_dup": clean_removed,
            "clean_removed_share": clean_removed / max(1, kinds["clean"]),
            "accounted": len(fate) == len(labels), "bad": {k: dict(v) for k, v in sorted(bad.items())},
            "metrics": m}


# ---------------------------------------------------------------- cells
def webtune_cell(data: Path, labels: Path | None, workers: int, work: Path, peers: Path, src: Path | None = None,
                 keep: bool = False) -> dict:
    """One webtune prepare in a child process; `src`: import webtune from there (another checkout).
    With `keep`, the run directory stays (the caller hashes and removes it)."""
    run_dir = work / f"webtune_{data.stem}"
    env = {"PYTHONPATH": str(src)} if src else None
    wall, peak, out, cpu = run_measured([sys.executable, str(Path(__file__)), "--child", str(data), str(run_dir),
                                    str(workers)], cwd=REPO, env=env)
    stats = json.loads(next(line[6:] for line in out.splitlines() if line.startswith("STATS ")))
    n = sum(c["in"] for c in stats["sources"].values())
    if keep:
        return {"run_dir": run_dir, "records": n, "seconds": stats["prepare_s"], "process_s": wall,
                "cpu_s": cpu, "peak_rss": peak, "stats": stats}
    q = quality(run_dir, labels, peers)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"system": f"webtune prepare ({workers} workers)", "records": n, "seconds": stats["prepare_s"],
            "process_s": wall, "fold_s": stats["fold_s"], "rate": n / stats["prepare_s"], "peak_rss": peak,
            "cpu_s": cpu, "stage_cpu_s": stats["cpu_s"],
            "near_recall": q["near_recall"], "exact_removed": q["exact_dup_removed_share"],
            "clean_removed": q["clean_removed_share"], "stats": stats, "quality": q}


def datatrove_cell(data: Path, labels: Path, peers: Path, python: str, work: Path) -> dict:
    out_json = work / "dt_results.json"
    wall, peak, _, cpu = run_measured([python, str(peers / "dt_pipeline.py"), "--input", str(data), "--labels", str(labels),
                                  "--work", str(work / "dt"), "--out", str(out_json)])
    r = json.loads(out_json.read_text())
    shutil.rmtree(work / "dt", ignore_errors=True)
    return {"system": "datatrove 0.10 (2 tasks)", "records": r["records_in"], "seconds": r["total_s"],
            "process_s": wall, "rate": r["records_per_s_overall"], "peak_rss": peak, "cpu_s": cpu,
            "near_recall": r["metrics"]["near_recall"], "exact_removed": r["metrics"]["exact_dup_removed_share"],
            "clean_removed": None, "raw": r}


def minhash_cell(lib: str, data: Path, labels: Path, peers: Path, python: str, work: Path) -> dict:
    out_json = work / f"mem_{lib}.json"
    wall, peak, _, cpu = run_measured([python, str(peers / "mem_minhash.py"), "--lib", lib, "--input", str(data),
                                  "--labels", str(labels), "--out", str(out_json)])
    r = json.loads(out_json.read_text())
    return {"system": f"{lib} MinHash LSH alone (1 process)", "records": r["records_in"], "seconds": r["total_s"],
            "process_s": wall, "rate": r["records_per_s_overall"], "peak_rss": peak, "cpu_s": cpu,
            "near_recall": r["metrics"]["near_recall"], "exact_removed": r["metrics"]["exact_dup_removed_share"],
            "clean_removed": None, "raw": r}


# ---------------------------------------------------------------- old commit vs this tree
def output_hash(run_dir: Path) -> str:
    import hashlib
    h = hashlib.sha256()
    for rel in ("data/examples.jsonl", "ledger/prepare/events.jsonl", "ledger.jsonl"):
        h.update((run_dir / rel).read_bytes())
    return h.hexdigest()[:16]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def compare(old_src: Path, data: Path, workers: int, rounds: int, work: Path, console) -> dict:
    """`rounds` interleaved rounds of old (webtune from old_src) and new (this tree)."""
    cells = {"old": old_src, "new": REPO / "src"}
    rows: dict[str, list[dict]] = {"old": [], "new": []}
    hashes: dict[str, set] = {"old": set(), "new": set()}
    load = {"before": load_average()}
    for r in range(rounds):
        for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
            row = webtune_cell(data, None, workers, work, Path("."), src=cells[name], keep=True)
            hashes[name].add(output_hash(row.pop("run_dir")))
            shutil.rmtree(work / f"webtune_{data.stem}", ignore_errors=True)
            rows[name].append(row)
            console.print(f"round {r + 1} {name}: {row['seconds']:.2f} s, CPU {row['cpu_s']:.2f} s, "
                          f"load {load_average()}")
    load["after"] = load_average()
    return {"rows": rows, "hashes": {k: sorted(v) for k, v in hashes.items()}, "load": load,
            "old_src": str(old_src), "data": str(data), "workers": workers, "rounds": rounds}


def compare_table(result: dict):
    from statistics import median

    from rich.table import Table

    t = Table(title=f"old ({result['old_src']}) vs new (this tree), {result['rounds']} interleaved rounds, "
                    f"{result['workers']} workers, load {result['load']['before']} -> {result['load']['after']}")
    for col in ("measure", "old median", "old min-max", "new median", "new min-max", "new / old"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    measures = {"prepare stage s (wall)": lambda r: r["seconds"],
                "prepare stage CPU s (its process + workers)": lambda r: r["stats"]["cpu_s"],
                "cell CPU s (+ imports, ledger fold)": lambda r: r["cpu_s"],
                "cell process s (wall)": lambda r: r["process_s"]}
    for label, get in measures.items():
        old = [get(r) for r in result["rows"]["old"]]
        new = [get(r) for r in result["rows"]["new"]]
        t.add_row(label, f"{median(old):.2f}", f"{min(old):.2f}-{max(old):.2f}", f"{median(new):.2f}",
                  f"{min(new):.2f}-{max(new):.2f}", f"{median(new) / median(old):.3f}")
    return t


def table(rows: list[dict], title: str):
    from rich.table import Table

    t = Table(title=title)
    for col in ("system", "records", "seconds", "records/s", "CPU s (process)", "records/CPU-s", "peak RSS MiB",
                "near recall (J>=0.8)", "exact dups removed", "clean removed as dup", "vs datatrove"):
        t.add_column(col, justify="left" if col == "system" else "right")
    base = next((r["rate"] for r in rows if r["system"].startswith("datatrove")), None)
    for r in rows:
        cpu = r.get("cpu_s")
        t.add_row(r["system"], f"{r['records']:,}", f"{r['seconds']:.1f}", f"{r['rate']:,.0f}",
                  f"{cpu:.1f}" if cpu else "-", f"{r['records'] / cpu:,.0f}" if cpu else "-",
                  f"{r['peak_rss'] / 2**20:,.0f}", f"{r['near_recall']:.4f}", f"{r['exact_removed']:.4f}",
                  "-" if r["clean_removed"] is None else f"{r['clean_removed']:.4%}",
                  f"{r['rate'] / base:.1f}x" if base else "-")
    return t


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--peer-size", type=int, default=200000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=HERE / "data" / "prepare")
    ap.add_argument("--peers", type=Path, default=SHARED / "bench" / "peers")
    ap.add_argument("--peers-python", default=str(REPO.parent / "peers-venv" / "bin" / "python"))
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "data" / "prepare" / "results.json")
    ap.add_argument("--compare", type=Path, metavar="SRC", help="another checkout's src/ (an old commit's worktree)")
    ap.add_argument("--rounds", type=int, default=9, help="--compare: interleaved rounds")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    return ap.parse_args()


def main():
    a = arguments()
    if a.child:
        return child(Path(a.child[0]), Path(a.child[1]), int(a.child[2]))

    from rich.console import Console
    console = Console(width=200)
    work = a.data / "work"
    work.mkdir(parents=True, exist_ok=True)
    if a.compare:
        return main_compare(a, work, console)
    results = {"scaling": [], "peers": []}
    sizes = [int(s) for s in a.sizes.split(",") if s]
    for n in sorted(set(sizes + ([a.peer_size] if not a.no_peers else [])), reverse=True):
        ensure_data(a.data, n)  # largest first: the smaller files are its prefixes

    def save():
        a.out.write_text(json.dumps(results, indent=1, default=str))

    # the slow peer (datatrove) runs last, so every other figure is in hand if it is stopped
    if not a.no_peers:
        data, labels = ensure_data(a.data, a.peer_size)
        for cell in ([lambda: webtune_cell(data, labels, a.workers, work, a.peers)]
                     + [lambda lib=lib: minhash_cell(lib, data, labels, a.peers, a.peers_python, work)
                        for lib in ("rensa", "datasketch")]):
            results["peers"].append(cell())
            console.print(table(results["peers"][-1:], "done"))
            save()
    scaling(a, sizes, work, results, save, console)
    if not a.no_peers and not a.no_datatrove:
        data, labels = ensure_data(a.data, a.peer_size)
        results["peers"].append(datatrove_cell(data, labels, a.peers, a.peers_python, work))
        save()
    if results["peers"]:
        console.print(table(results["peers"], f"Side by side on {a.peer_size:,} records (gen_products.py --seed 0), "
                                              f"same run"))
    save()
    console.print(f"results: {a.out}")


def main_compare(a, work: Path, console) -> None:
    data, _ = ensure_data(a.data, int(a.sizes.split(",")[0]))
    result = compare(a.compare.resolve(), data, a.workers, a.rounds, work, console)
    a.out.write_text(json.dumps(result, indent=1, default=str))
    console.print(compare_table(result))
    same = len(result["hashes"]["old"]) == 1 and result["hashes"]["old"] == result["hashes"]["new"]
    console.print(f"outputs (examples.jsonl, events.jsonl, ledger.jsonl) identical across every cell: {same}")


def scaling(a, sizes: list[int], work: Path, results: dict, save, console) -> None:
    """The webtune cell at each size, then the growth table and the bad records' fates at the largest."""
    for n in sizes:
        data, labels = ensure_data(a.data, n)
        row = webtune_cell(data, labels, a.workers, work, a.peers)
        results["scaling"].append(row)
        save()
        console.print(f"{n:,}: {row['rate']:,.0f} records/s, CPU {row['cpu_s']:.1f} s, peak RSS "
                      f"{row['peak_rss'] / 2**20:,.0f} MiB, steps (worker wall s) {row['stats']['worker_seconds']}, "
                      f"phases {row['stats']['seconds']}")
    if not results["scaling"]:
        return
    console.print(table(results["scaling"], "webtune prepare: growth from 100k to 1M records"))
    last = results["scaling"][-1]["quality"]
    console.print("bad:* and error records at the largest size (final fate: count):")
    for kind, fates in last["bad"].items():
        console.print(f"  {kind:28} {fates}")
    console.print(f"exact_dup kept: {last['exact_dup_kept']} of {last['exact_dup_total']}; clean removed as "
                  f"duplicates: {last['clean_removed_as_dup']} of {last['clean_total']}; every record in the "
                  f"ledger: {last['accounted']}")


if __name__ == "__main__":
    main()
