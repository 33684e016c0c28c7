"""llama.cpp itself reading a GGUF export: the prebuilt npm binding `node-llama-cpp` run by Node.

Why this binding: on a fresh x86-64 Linux machine `npm ci --omit=optional` of `node-llama-cpp` with
its prebuilt `@node-llama-cpp/linux-x64` takes ~20-30 s and 85 MB, nothing compiled; `llama-cpp-python`
builds llama.cpp from source (~40 min on two loaded cores). Node 20+ is the one system requirement.

The runtime lives in `$WEBTUNE_CACHE/llamacpp/` (default `~/.cache/webtune/llamacpp/`): the pinned
`package.json`/`package-lock.json` and `check.mjs` shipped in `llamacpp_runtime/`, and their
`node_modules`. `python -m webtune.deploy.llamacpp` (or `make llamacpp`) installs it; `read_back`
runs `check.mjs` on a GGUF (see its header for the exchange).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from webtune.errors import WebtuneError

SHIPPED = Path(__file__).with_name("llamacpp_runtime")
FILES = ("package.json", "package-lock.json", "check.mjs")


def runtime_dir() -> Path:
    return Path(os.environ.get("WEBTUNE_CACHE") or "~/.cache/webtune").expanduser() / "llamacpp"


def install_command() -> str:
    return f"{Path(sys.executable).name} -m webtune.deploy.llamacpp  (Node 20+ and npm; installs into {runtime_dir()})"


def missing() -> Optional[str]:
    """Why llama.cpp cannot be run here (one line), or None when it can."""
    if shutil.which("node") is None:
        return "Node.js (20 or newer) is not on PATH; install it (e.g. apt-get install nodejs npm)"
    if not (runtime_dir() / "node_modules" / "@node-llama-cpp" / "linux-x64").is_dir():
        return f"llama.cpp's prebuilt runtime is not installed; run {install_command()}"
    return None


def install() -> Path:
    """Install (or reuse) the pinned node-llama-cpp in runtime_dir(); idempotent."""
    home = runtime_dir()
    home.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(SHIPPED / name, home / name)
    if (home / "node_modules" / "@node-llama-cpp" / "linux-x64").is_dir():
        return home
    if shutil.which("npm") is None:
        raise WebtuneError("npm is not on PATH; install Node.js 20+ with npm (e.g. apt-get install nodejs npm)")
    # --omit=optional: the CUDA/Vulkan/ARM builds are optional dependencies; linux-x64 is a direct one.
    # NODE_LLAMA_CPP_SKIP_DOWNLOAD: never fetch or compile llama.cpp sources, use the prebuilt binary.
    done = subprocess.run(["npm", "install", "--omit=optional", "--no-audit", "--no-fund", "--ignore-scripts"],
                          cwd=home, capture_output=True, text=True,
                          env={**os.environ, "NODE_LLAMA_CPP_SKIP_DOWNLOAD": "true"})
    if done.returncode != 0:
        raise WebtuneError(f"npm install in {home} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return home


@dataclass
class ReadBack:
    predicted: list[list[int]]   # llama.cpp's greedy token at each step, the reference's tokens fed
    tokenized: list[list[int]]   # llama.cpp's own tokenizer on the given texts
    build: str


def read_back(gguf: Path, prompts: list[list[int]], reference: list[list[int]], texts: list[str]) -> ReadBack:
    """Load `gguf` in llama.cpp; its greedy predictions after each prompt (teacher-forced on
    `reference`) and its tokenization of `texts`."""
    problem = missing()
    if problem:
        raise WebtuneError(f"{gguf}: cannot check the file with llama.cpp: {problem}")
    home = runtime_dir()
    for name in FILES:  # the shipped script may be newer than the installed copy
        if (home / name).read_bytes() != (SHIPPED / name).read_bytes():
            shutil.copyfile(SHIPPED / name, home / name)
    job = {"model": str(Path(gguf).resolve()), "prompts": prompts, "reference": reference, "texts": texts,
           "threads": 1}
    done = subprocess.run(["node", str(home / "check.mjs")], input=json.dumps(job), capture_output=True,
                          text=True, cwd=home)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise WebtuneError(f"{gguf}: llama.cpp could not read the file: {last[0]}")
    out = json.loads(done.stdout)
    return ReadBack(out["predicted"], out["tokenized"], out.get("llama_cpp", ""))


def agreement(predicted: list[list[int]], reference: list[list[int]]) -> float:
    """Share of the reference's greedy tokens that llama.cpp predicts too (teacher-forced)."""
    pairs = [(p, r) for ps, rs in zip(predicted, reference) for p, r in zip(ps, rs)]
    return sum(p == r for p, r in pairs) / max(len(pairs), 1)


if __name__ == "__main__":
    print(f"llama.cpp runtime (node-llama-cpp) ready in {install()}")
