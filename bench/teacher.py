#!/usr/bin/env python3
"""The teacher on real documentation: questions written by a model, the sections kept as answers.

The first `--n` pages of Debian's python3.11-doc library reference (`apt-get install python3.11-doc`)
go through the shipped `source=docs_pages template=docs_qa_teacher` (the source and prepare stages,
in process), asking
  fake    tests/fakes/teacher_server.py (loopback, instant, deterministic): the mechanism's own cost
  serve   `webtune serve` of the default base (SmolLM2-135M-Instruct, from the model cache), a real
          model on the real client path, on every section of the first `--serve-pages` pages only (a
          135M model on two CPU cores takes many seconds a section); first a probe of its batching
          (one request alone, then `--concurrency` at once)
each twice: the first run asks, the rerun must send nothing (cache hits). Then `--show` sections are
printed with the teacher's questions next to the heading question `template=docs_qa` asks for the
same section, and a few replies that did not parse (from the run's data/teacher_replies.jsonl).

  python bench/teacher.py [--docs /usr/share/doc/python3.11/html/library] [--n 150] [--serve-pages 6]
"""
from __future__ import annotations

import argparse
import copy
import glob
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.teacher_server import FakeTeacher  # noqa: E402
from webtune.console import console as log_console  # noqa: E402
from webtune.hydra_setup import compose  # noqa: E402
from webtune.runner import StageContext  # noqa: E402

out = Console(highlight=False, width=220)


def prepare(base, runs: Path, run_dir: Path, *overrides: tuple[str, object]) -> tuple[dict, float]:
    """The source and prepare stages (teacher step included) into run_dir; (stats, seconds)."""
    from webtune import stages
    cfg = copy.deepcopy(base)
    OmegaConf.update(cfg, "runs_dir", str(runs))
    for key, value in overrides:
        OmegaConf.update(cfg, key, value)
    ctx = StageContext(cfg, run_dir, log_console, lambda message: None)
    t0 = time.perf_counter()
    stages.run_source(ctx)
    stats = stages.run_prepare(ctx)
    return stats, time.perf_counter() - t0


def examples(run_dir: Path) -> list[dict]:
    return [orjson.loads(line) for line in (run_dir / "data/examples.jsonl").read_bytes().splitlines()]


def questions_by_section(run_dir: Path) -> dict[str, list[str]]:
    events = [orjson.loads(line) for line in (run_dir / "ledger/prepare/teacher.jsonl").read_bytes().splitlines()]
    return {ev["id"]: [q["q"] + ("" if q["status"] == "kept" else f"  [{q['reason']}]") for q in ev["questions"]]
            for ev in events}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model_dir: Path, port: int, log: Path, threads: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(Path(sys.executable).with_name("webtune")), "serve", str(model_dir), "--port", str(port),
                             "--max-tokens", "512", "--threads", str(threads)], stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(1)
    proc.kill()
    raise SystemExit("webtune serve did not come up in 300 s")


def probe_batching(base_url: str, model: str, concurrency: int, max_tokens: int = 48) -> dict:
    """One request alone, then `concurrency` at once: with batching the burst takes far less than
    `concurrency` times one request (the server decodes them together)."""
    import concurrent.futures as cf
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0.0, "messages": [
        {"role": "user", "content": "Write three questions a programmer might ask about Python's json module."}]}

    def one() -> int:
        r = httpx.post(f"{base_url}/chat/completions", json=body, timeout=900)
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]
    t0 = time.perf_counter()
    single = one()
    alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        burst = list(pool.map(lambda _: one(), range(concurrency)))
    together = time.perf_counter() - t0
    got = {"alone_s": round(alone, 2), "alone_tokens": single, "concurrent": concurrency,
           "together_s": round(together, 2), "together_tokens": sum(burst),
           "tokens_per_s_alone": round(single / alone, 2), "tokens_per_s_together": round(sum(burst) / together, 2)}
    out.print(f"batching probe: 1 request {alone:.1f} s ({single} tokens); {concurrency} at once {together:.1f} s "
              f"({sum(burst)} tokens): {got['tokens_per_s_alone']} -> {got['tokens_per_s_together']} tokens/s")
    return got


def unparsed_replies(run_dir: Path, limit: int) -> list[tuple[str, str]]:
    """(example id, first reply) of sections whose replies did not parse, from the run's record."""
    rejected = {ev["id"] for ev in map(orjson.loads, (run_dir / "ledger/prepare/teacher.jsonl").read_bytes().splitlines())
                if ev.get("reason") == "teacher:unparseable"}
    found = []
    for line in (run_dir / "data/teacher_replies.jsonl").read_bytes().splitlines():
        item = orjson.loads(line)
        rid = item["example"].rsplit("/", 1)[0]
        if rid in rejected and len(found) < limit:
            found.append((rid, item["entry"]["replies"][0]["text"]))
    return found


results: dict = {}


def row(table: Table, name: str, stats: dict, seconds: float) -> None:
    t = stats["teacher"]
    results[name] = {"teacher": t, "stage_seconds": seconds, "prepare_seconds": stats["seconds"]}
    rejected = ", ".join(f"{r.split(':')[1]} {n}" for r, n in {**t["sections_rejected"]}.items()) or "-"
    qrej = ", ".join(f"{r.split(':')[1]} {n}" for r, n in t["questions"]["rejected"].items()) or "-"
    table.add_row(name, f"{t['sections']:,}", f"{t['sections_kept']:,}", rejected,
                  f"{t['questions']['kept']:,} / {t['questions']['written']:,}", qrej,
                  f"{t['requests']['sent']:,}", f"{t['requests']['cached']:,}",
                  f"{t['tokens']['input']:,} / {t['tokens']['output']:,}", f"{t['seconds']:.1f}", f"{seconds:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", default="/usr/share/doc/python3.11/html/library")
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--serve-pages", type=int, default=6, help="pages the 135M teacher is asked about (0: the probe only)")
    ap.add_argument("--skip-serve", action="store_true")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads of webtune serve's decode thread (0: half the cores)")
    ap.add_argument("--serve-port", type=int, help="a `webtune serve` of the default base already running here")
    ap.add_argument("--skip-fake", action="store_true")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--show", type=int, default=10)
    ap.add_argument("--work", help="a folder to work in (default: a new temporary one); its caches are reused")
    a = ap.parse_args()
    pages = sorted(glob.glob(f"{a.docs}/*.html"))[:a.n]
    if not pages:
        raise SystemExit(f"no pages in {a.docs}: apt-get install python3.11-doc")
    tmp = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench-teacher-"))
    runs = tmp / "runs"
    base = compose(["source=docs_pages", "template=docs_qa_teacher", "mix.general.enabled=false",
                    "teacher.model=fake-teacher"])
    OmegaConf.update(base, "source.files.paths", pages)
    OmegaConf.update(base, "source.files.root", a.docs)

    table = Table(title=f"teacher on the first {len(pages)} pages of the Python docs ({os.cpu_count()} CPUs, "
                        f"load {os.getloadavg()[0]:.1f})")
    for col in ("teacher", "sections", "kept", "sections rejected", "questions kept", "questions rejected",
                "requests sent", "cached", "tokens in / out", "teacher s", "stage s"):
        table.add_column(col, justify="left" if col in ("teacher", "sections rejected", "questions rejected") else "right")

    if not (tmp / "heading/data/examples.jsonl").exists():   # a --work folder keeps it
        prepare(base, runs, tmp / "heading", ("template", compose(["template=docs_qa"]).template))
    heading_q = {ex["record_id"]: ex["messages"][1]["content"] for ex in examples(tmp / "heading")
                 if ex["template"] == "docs_answer"}

    with FakeTeacher() as fake:
        for run in ("fake", "fake rerun") if not a.skip_fake else ():
            stats, seconds = prepare(base, runs, tmp / run.replace(" ", "_"), ("teacher.base_url", fake.base_url),
                                     ("teacher.max_concurrency", a.concurrency))
            row(table, run, stats, seconds)
        assert a.skip_fake or stats["teacher"]["requests"]["sent"] == 0, "the rerun sent requests"

    if not a.skip_fake:
        out.print(table)
    (tmp / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    results["load_before"] = os.getloadavg()
    served = {}
    if not a.skip_serve:
        from webtune.base_model import resolve
        model_dir = Path(resolve("smollm2-135m-instruct"))
        port = a.serve_port or free_port()
        proc = serve(model_dir, port, tmp / "serve.log", a.threads) if not a.serve_port else None
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            results["batching_probe"] = probe_batching(base_url, model_dir.name, a.concurrency)
            served_pages = pages[:a.serve_pages]
            results["served_pages"] = [Path(p).name for p in served_pages]
            for run in ("SmolLM2-135M", "SmolLM2-135M rerun") if served_pages else ():
                stats, seconds = prepare(base, runs, tmp / run.replace(" ", "_"), ("source.files.paths", served_pages),
                                         ("teacher.base_url", base_url),
                                         ("teacher.model", model_dir.name), ("teacher.max_tokens", a.max_tokens),
                                         ("teacher.max_concurrency", a.concurrency))
                row(table, run, stats, seconds)
                served = questions_by_section(tmp / "SmolLM2-135M")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()
        results["load_after"] = os.getloadavg()
        out.print(table)
        (tmp / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))

    fake_q = questions_by_section(tmp / "fake") if not a.skip_fake else {}
    shown = [rid for rid in (served or fake_q) if rid in heading_q and (served or fake_q)[rid]][:a.show]
    out.print(f"\n{len(shown)} sections: the heading question (template=docs_qa) and the teacher's questions")
    for rid in shown:
        out.print(f"\n[bold]{rid}[/bold]\n  heading:  {heading_q[rid]}")
        for q in (served or fake_q)[rid]:
            out.print(f"  teacher:  {q}")
    if served:
        out.print("\nreplies that did not parse (the first of the two asked):")
        for rid, text in unparsed_replies(tmp / "SmolLM2-135M", a.show):
            out.print(f"\n[bold]{rid}[/bold]\n  heading:  {heading_q.get(rid)}\n  reply:    {text[:400]!r}")
    print(f"\n(run folder: {tmp})")


if __name__ == "__main__":
    main()
