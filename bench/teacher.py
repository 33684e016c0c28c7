#!/usr/bin/env python3
"""The teacher on real documentation: questions written by a model, the sections kept as answers.

The first `--n` pages of Debian's python3.11-doc library reference (`apt-get install python3.11-doc`)
go through the shipped `source=docs_pages template=docs_qa_teacher` (the source and prepare stages,
in process), asking
  fake    tests/fakes/teacher_server.py (loopback, instant, deterministic): the mechanism's own cost
  serve   `webtune serve` of the default base (SmolLM2-135M-Instruct, from the model cache), a real
          model on the real client path; `--serve-requests` caps it (teacher.on_cap=partial: the rest
          are `teacher:cap_reached`), since a 135M model on two CPU cores takes seconds a section
each twice: the first run asks, the rerun must send nothing (cache hits). Then `--show` sections are
printed with the teacher's questions next to the heading question `template=docs_qa` asks for the
same section.

  python bench/teacher.py [--docs /usr/share/doc/python3.11/html/library] [--n 150] [--serve-requests 150]
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


def serve(model_dir: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(Path(sys.executable).with_name("webtune")), "serve", str(model_dir), "--port", str(port),
                             "--max-tokens", "512"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(1)
    proc.kill()
    raise SystemExit("webtune serve did not come up in 300 s")


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
    ap.add_argument("--serve-requests", type=int, default=150, help="cap on the 135M teacher's requests (0: skip)")
    ap.add_argument("--concurrency", type=int, default=8)
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

    out.print(table)
    (tmp / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    served = {}
    if a.serve_requests:
        from webtune.base_model import resolve
        model_dir = Path(resolve("smollm2-135m-instruct"))
        port = a.serve_port or free_port()
        proc = serve(model_dir, port) if not a.serve_port else None
        try:
            for run in ("SmolLM2-135M", "SmolLM2-135M rerun"):
                stats, seconds = prepare(base, runs, tmp / run.replace(" ", "_"),
                                         ("teacher.base_url", f"http://127.0.0.1:{port}/v1"),
                                         ("teacher.model", model_dir.name), ("teacher.max_tokens", a.max_tokens),
                                         ("teacher.max_concurrency", a.concurrency),
                                         ("teacher.max_requests", a.serve_requests), ("teacher.on_cap", "partial"))
                row(table, run, stats, seconds)
                served = questions_by_section(tmp / "SmolLM2-135M")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()
        out.print(table)
        (tmp / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))

    fake_q = questions_by_section(tmp / "fake") if not a.skip_fake else {}
    shown = [rid for rid in (served or fake_q) if rid in heading_q and (served or fake_q)[rid]][:a.show]
    out.print(f"\n{len(shown)} sections: the heading question (template=docs_qa) and the teacher's questions")
    for rid in shown:
        out.print(f"\n[bold]{rid}[/bold]\n  heading:  {heading_q[rid]}")
        for q in (served or fake_q)[rid]:
            out.print(f"  teacher:  {q}")
    print(f"\n(run folder: {tmp})")


if __name__ == "__main__":
    main()
