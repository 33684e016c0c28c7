"""Serving benchmark: the tiny model on CPU behind `webtune serve`, 1 and 32 concurrent streaming
chat clients; time to first token, tokens/s, errors. The peer is `transformers serve` (same model,
same requests, same machine, in the same run), reported as a ratio.

    python bench/serve.py [--max-tokens 64] [--clients 1 32] [--no-peer] [--write]

--write puts the table into bench/RESULTS.md under "## Serving (issue 10)".
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from webtune.deploy import registry as reg
from webtune.deploy.generate import make_tiny_chat_model

SECTION = "## Serving (issue 10)"
MESSAGES = [{"role": "system", "content": "You write product copy."},
            {"role": "user", "content": "Describe a stainless steel water bottle in two sentences."}]
console = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {' '.join(cmd)}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not come up: {' '.join(cmd)}; see {log}")


async def one_stream(client: httpx.AsyncClient, url: str, model: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = None
    pieces, usage = 0, None
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return {"error": f"HTTP {r.status_code}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    return {"error": data["error"].get("message", "error")}
                if data.get("usage"):
                    usage = data["usage"]
                if data.get("choices") and data["choices"][0]["delta"].get("content"):
                    pieces += 1
                    if first is None:
                        first = time.perf_counter()
    except httpx.HTTPError as e:
        return {"error": type(e).__name__}
    end = time.perf_counter()
    tokens = usage["completion_tokens"] if usage else pieces
    if first is None:
        return {"error": "no tokens"}
    return {"ttft": first - t0, "tokens": tokens, "tps": (tokens - 1) / (end - first) if end > first else 0.0,
            "t0": t0, "end": end}


async def load(url: str, model: str, clients: int, max_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await one_stream(client, url, model, 4)  # warm-up
        results, wall = [], 0.0
        for _ in range(max(1, 8 // clients)):  # a few rounds where one round is few requests
            t0 = time.perf_counter()
            results += await asyncio.gather(*[one_stream(client, url, model, max_tokens) for _ in range(clients)])
            wall += time.perf_counter() - t0
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    ttfts = sorted(r["ttft"] for r in ok)

    def pct(xs, q):
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
    return {"clients": clients, "ok": len(ok), "errors": len(errors), "error_kinds": sorted(set(errors)),
            "ttft_p50": pct(ttfts, 0.5), "ttft_p95": pct(ttfts, 0.95),
            "stream_tps": statistics.median(r["tps"] for r in ok) if ok else 0.0,
            "total_tps": sum(r["tokens"] for r in ok) / wall, "tokens": sum(r["tokens"] for r in ok),
            "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--slots", type=int, nargs="+", default=[2, 4], help="webtune serve --max-concurrency")
    ap.add_argument("--threads", type=int, default=0, help="webtune serve --threads (0: cores // slots)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="webtune-bench-serve-"))
    run = work / "run"
    make_tiny_chat_model(run / "model")
    (run / "metrics.json").write_text(json.dumps({"eval": {"passed": True, "flags": []}}))
    reg.register(work / "registry", "tiny", run)
    reg.promote(work / "registry", "tiny", 1)
    model_dir = work / "registry" / "tiny" / "v1" / "model"

    servers = [(f"webtune serve, {n} slots", "tiny", lambda p, n=n: [
        sys.executable, "-m", "webtune.deploy.serve", str(work / "registry"), "tiny", "--port", str(p),
        "--max-concurrency", str(n), "--queue-size", "256", "--threads", str(a.threads)]) for n in a.slots]
    if not a.no_peer:
        tf = Path(sys.executable).with_name("transformers")
        # the same one intra-op thread per request that webtune serve uses on this machine
        servers.append(("transformers serve", str(model_dir), lambda p: ["env", "OMP_NUM_THREADS=1",
            str(tf), "serve", str(model_dir), "--port", str(p), "--device", "cpu"]))

    # All servers up at once (idle ones cost nothing); they take turns, round after round, and each
    # cell keeps its best round, so load from other jobs on the machine falls on all of them alike.
    procs, ports = [], {}
    try:
        for label, model, cmd in servers:
            ports[label] = free_port()
            procs.append(start(cmd(ports[label]), ports[label],
                               work / f"{label.replace(' ', '_').replace(',', '')}.log"))
        best: dict = {}
        for rnd in range(a.rounds):
            for c in a.clients:
                for label, model, _ in servers:
                    with console.status(f"round {rnd + 1}/{a.rounds}: {label}, {c} streaming client(s)..."):
                        r = asyncio.run(load(f"http://127.0.0.1:{ports[label]}", model, c, a.max_tokens))
                    errors = best.get((label, c), {}).get("errors", 0) + r["errors"]
                    if (label, c) not in best or r["total_tps"] > best[(label, c)]["total_tps"]:
                        best[(label, c)] = {"server": label, **r}
                    best[(label, c)]["errors"] = errors  # errors count over all rounds
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    rows = [best[(label, c)] for label, _, _ in servers for c in a.clients]

    table = Table(title=f"tiny Llama (hidden 64, 2 layers) on CPU, {a.max_tokens} new tokens per stream")
    for col in ("server", "clients", "ok", "errors", "TTFT p50 s", "TTFT p95 s", "tok/s per stream",
                "tok/s total", "vs peer (total)"):
        table.add_column(col, justify="right" if col != "server" else "left")
    peer = {r["clients"]: r for r in rows if r["server"] == "transformers serve"}
    lines = []
    for r in rows:
        ratio = (f"{r['total_tps'] / peer[r['clients']]['total_tps']:.2f}x"
                 if r["server"].startswith("webtune") and r["clients"] in peer and peer[r["clients"]]["total_tps"]
                 else "")
        cells = [r["server"], str(r["clients"]), str(r["ok"]), str(r["errors"]) + (
                 f" ({', '.join(r['error_kinds'])})" if r["errors"] else ""), f"{r['ttft_p50']:.3f}",
                 f"{r['ttft_p95']:.3f}", f"{r['stream_tps']:.1f}", f"{r['total_tps']:.1f}", ratio]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)

    if a.write:
        cpu = f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
        body = "\n".join([
            SECTION, "",
            f"`python bench/serve.py{' --write'}` — {time.strftime('%Y-%m-%d')}, {cpu}; tiny Llama (hidden 64, "
            f"2 layers, vocab 320) built by `make_tiny_chat_model`, {a.max_tokens} new tokens per streaming "
            f"chat request, greedy; `webtune serve --max-concurrency N` (N slots, cores // N torch threads each); "
            f"peer: `transformers serve` (OMP_NUM_THREADS=1) on the same model in the same run. TTFT "
            f"includes time spent queued; 1 client = 8 requests in a row. The servers take turns for "
            f"{a.rounds} rounds and each cell shows its best round (errors: all rounds), because other jobs "
            f"share the machine (load average at the end: {os.getloadavg()[0]:.1f}).", "",
            "| server | clients | ok | errors | TTFT p50 s | TTFT p95 s | tok/s per stream | tok/s total | vs peer (total) |",
            "|---|---|---|---|---|---|---|---|---|", *lines, ""])
        path = Path(__file__).with_name("RESULTS.md")
        text = path.read_text() if path.exists() else "# Benchmark results\n"
        if SECTION in text:
            start_i = text.index(SECTION)
            nxt = text.find("\n## ", start_i + len(SECTION))
            old = text[start_i:nxt if nxt != -1 else len(text)]
            notes = old[old.index("\n### ") + 1:].rstrip("\n") + "\n" if "\n### " in old else ""
            body += ("\n" + notes if notes else "")  # hand-written ### notes under the table stay
            text = text[:start_i] + body + ("\n" + text[nxt + 1:] if nxt != -1 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + body
        path.write_text(text)
        console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
