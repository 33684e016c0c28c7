"""Load test of `webtune serve` against hostile clients (issue 26), on 127.0.0.1 only, bounded.

One scenario: 100 concurrent streaming chat requests (the small ones, greedy, `--max-tokens` new
tokens each; a 429 is retried after its Retry-After, at most RETRIES times), and at the same moment
5 oversized requests (one 50 MB message each: must be a 413) and 5 amplified ones (400 prompts x
n=8 on /v1/completions: must be a 400). The same 100 streams alone give the baseline. Each
scenario gets a fresh server (`webtune serve MODEL --port P`, its default limits), so its peak
memory (VmHWM) is its own; /health is polled throughout and its slowest answer kept.

    python bench/serve_load.py [--model smollm2|tiny|DIR] [--streams 100] [--max-tokens 16] [--write]

Columns: completed (small streams that ended with [DONE]), 429 answers with Retry-After / without
(must be 0), small requests still refused after RETRIES waits, hostile refused as expected (413 /
400), errors (5xx, an in-band error, a wrong status, a connection error), dropped streams (a 200
stream that ended without [DONE]), p50/p95 latency of the small requests (send to [DONE], retries included),
the slowest /health, the server's peak RSS. --write puts the table in bench/RESULTS.md under
SECTION.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from serve import MESSAGES, free_port, model_dirs, start  # bench/serve.py, beside this file

SECTION = "## Serving under hostile load (issue 26)"
REPO = Path(__file__).resolve().parents[1]
RETRIES = 20           # 429s a small client waits out (each for its Retry-After) before it gives up
RETRY_AFTER_CAP = 30   # seconds; a client never waits longer than this on one Retry-After
console = Console(width=240)


class Tally:
    def __init__(self):
        self.completed = self.refused_ra = self.refused_no_ra = self.gave_up = self.errors = self.dropped = 0
        self.hostile_ok = self.hostile_bad = 0
        self.latencies: list[float] = []
        self.error_kinds: set[str] = set()
        self.health_max = 0.0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds.add(kind)


async def small(client: httpx.AsyncClient, url: str, model: str, i: int, max_tokens: int, t: Tally) -> None:
    body = {"model": model, "messages": MESSAGES[i % len(MESSAGES)], "max_tokens": max_tokens, "temperature": 0,
            "stream": True}
    t0 = time.perf_counter()
    for _ in range(RETRIES + 1):
        started = done = False
        try:
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                if r.status_code == 429:
                    await r.aread()
                    wait = r.headers.get("retry-after")
                    if wait is None:
                        t.refused_no_ra += 1
                        wait = "1"
                    else:
                        t.refused_ra += 1
                    await asyncio.sleep(min(float(wait), RETRY_AFTER_CAP))
                    continue
                if r.status_code != 200:
                    await r.aread()
                    return t.error(f"small HTTP {r.status_code}")
                started = True
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: ") and "error" in json.loads(line[6:]):
                        return t.error("in-band error")
        except httpx.HTTPError as e:
            if not started:
                return t.error(type(e).__name__)
        if not done:
            t.dropped += 1
            return
        t.completed += 1
        t.latencies.append(time.perf_counter() - t0)
        return
    t.gave_up += 1


async def hostile(client: httpx.AsyncClient, url: str, path: str, content: bytes, status: int, t: Tally) -> None:
    try:
        r = await client.post(url + path, content=content, headers={"content-type": "application/json"})
    except httpx.HTTPError as e:
        return t.error(f"hostile {type(e).__name__}")
    if r.status_code == status and "error" in r.json():
        t.hostile_ok += 1
    else:
        t.hostile_bad += 1
        t.error(f"hostile HTTP {r.status_code}")


async def watch_health(client: httpx.AsyncClient, url: str, stop: asyncio.Event, t: Tally) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            await client.get(url + "/health", timeout=120)
        except httpx.HTTPError:
            t.error("health")
        t.health_max = max(t.health_max, time.perf_counter() - t0)
        await asyncio.sleep(0.25)


async def scenario(url: str, model: str, a, with_hostile: bool) -> Tally:
    t = Tally()
    oversized = json.dumps({"model": model, "messages": [{"role": "user", "content": "x" * (a.oversized_mb << 20)}]})
    amplified = json.dumps({"model": model, "prompt": [f"item {k}" for k in range(400)], "n": 8, "max_tokens": 16})
    limits = httpx.Limits(max_connections=a.streams + a.oversized + a.amplified + 8)
    async with httpx.AsyncClient(timeout=a.timeout, limits=limits) as client:
        stop = asyncio.Event()
        health = asyncio.create_task(watch_health(client, url, stop, t))
        jobs = []
        if with_hostile:
            jobs += [hostile(client, url, "/v1/chat/completions", oversized.encode(), 413, t) for _ in range(a.oversized)]
            jobs += [hostile(client, url, "/v1/completions", amplified.encode(), 400, t) for _ in range(a.amplified)]
        jobs += [small(client, url, model, i, a.max_tokens, t) for i in range(a.streams)]
        await asyncio.wait_for(asyncio.gather(*jobs), a.timeout)
        stop.set()
        await health
    return t


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(model_dir: Path, a, with_hostile: bool, work: Path) -> dict:
    port = free_port()
    proc = start([sys.executable, "-m", "webtune", "serve", str(model_dir), "--port", str(port)], port,
                 work / f"serve-{'hostile' if with_hostile else 'alone'}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        httpx.post(url + "/v1/chat/completions", timeout=600, json={  # warm-up
            "model": model, "messages": MESSAGES[0], "max_tokens": 2})
        before = os.getloadavg()[0]
        with console.status(f"{'with' if with_hostile else 'without'} hostile requests"):
            t0 = time.perf_counter()
            t = asyncio.run(scenario(url, model, a, with_hostile))
            wall = time.perf_counter() - t0
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    lat = sorted(t.latencies)

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    return {"scenario": (f"{a.streams} streams + {a.oversized} oversized ({a.oversized_mb} MB) + {a.amplified} "
                         f"amplified (400 prompts x n=8)") if with_hostile else f"{a.streams} streams alone",
            "completed": f"{t.completed}/{a.streams}", "refused_ra": t.refused_ra, "refused_no_ra": t.refused_no_ra,
            "gave_up": t.gave_up,
            "hostile": f"{t.hostile_ok}/{a.oversized + a.amplified}" if with_hostile else "-",
            "errors": t.errors, "error_kinds": sorted(t.error_kinds), "dropped": t.dropped,
            "p50": pct(0.5), "p95": pct(0.95), "health_max": t.health_max, "rss": rss, "wall": wall,
            "load": f"{before:.1f}-{os.getloadavg()[0]:.1f}"}


COLUMNS = [("scenario", "scenario"), ("completed", "small completed"), ("refused_ra", "429s with Retry-After"),
           ("refused_no_ra", "429s without"), ("gave_up", "small refused to the end"),
           ("hostile", "hostile refused (413/400)"), ("errors", "errors"),
           ("dropped", "dropped streams"), ("p50", "small p50 s"), ("p95", "small p95 s"),
           ("health_max", "slowest /health s"), ("rss", "server peak RSS MB"), ("wall", "wall s"),
           ("load", "load avg (1 min)")]


def cell(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write(rows: list[dict], header: str) -> None:
    lines = [SECTION, "", header, "", "| " + " | ".join(h for _, h in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[k]) for k, _ in COLUMNS) + " |" for r in rows]
    text = (REPO / "bench" / "RESULTS.md").read_text()
    block = "\n".join(lines) + "\n"
    if SECTION in text:  # replace our section only, up to the next "## "
        head, rest = text.split(SECTION, 1)
        after = rest.find("\n## ")
        text = head + block + ("\n" + rest[after + 1:] if after >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    (REPO / "bench" / "RESULTS.md").write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2", help="smollm2 (webtune fetch-base), tiny, or a model directory")
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--oversized", type=int, default=5)
    p.add_argument("--oversized-mb", type=int, default=50)
    p.add_argument("--amplified", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--timeout", type=float, default=1800, help="seconds for a whole scenario")
    p.add_argument("--write", action="store_true", help="put the table into bench/RESULTS.md")
    a = p.parse_args()
    model_dir = model_dirs([a.model])[a.model]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as work:
        rows = [run(model_dir, a, True, Path(work)), run(model_dir, a, False, Path(work))]
    table = Table(title=f"webtune serve under hostile load: {model_dir.name}")
    for _, h in COLUMNS:
        table.add_column(h)
    for r in rows:
        table.add_row(*[cell(r[k]) for k, _ in COLUMNS])
    console.print(table)
    for r in rows:
        if r["error_kinds"]:
            console.print(f"{r['scenario']}: errors {r['error_kinds']}")
    end_load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    header = (f"`python bench/serve_load.py --model {a.model} --streams {a.streams} --max-tokens {a.max_tokens}` — "
              f"{started}, commit {commit}, {os.cpu_count()} CPU cores, {platform.machine()}; model {a.model} "
              f"({model_dir}); "
              f"`webtune serve` with its defaults (32 sequences decoding, 64 queued, 32 per request, 4 MiB bodies). "
              f"Load average (1/5/15 min) at the start {load}, at the end {end_load} (`uptime`).")
    console.print(header)
    if a.write:
        write(rows, header)


if __name__ == "__main__":
    main()
