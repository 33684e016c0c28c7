"""vLLM's OpenAI server as a child process on loopback: found, started, waited for, given LoRA
adapters at runtime, stopped. Shared by `serve --engine vllm` (deploy/vllm_engine.py) and evaluate's
`eval.engine: vllm` (evaluate/vllm_generate.py).

vLLM lives in its own environment (`scripts/vllm_env.sh`, `make vllm`: `.venv-vllm`); a command
(`--vllm-command`, `eval.vllm.command`, or `$WEBTUNE_VLLM`) names another `vllm` executable.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from webtune.errors import WebtuneError

log = logging.getLogger("uvicorn.error")
DEFAULT_VENV = ".venv-vllm"
LORA_RANKS = (8, 16, 32, 64, 128, 256)  # the --max-lora-rank values vLLM accepts


@dataclass
class VllmSettings:
    command: Optional[str] = None     # the `vllm` executable (None: $WEBTUNE_VLLM, .venv-vllm/bin/vllm, PATH)
    max_model_len: int = 2048         # context vLLM plans its KV cache for (capped by the model's own)
    kv_cache_gib: float = 1.0         # memory for the KV cache (vLLM-CPU would reserve 92% of RAM); SmolLM2: 23k tokens
    max_loras: int = 4                # adapters resident at once (promote loads the new one first)
    max_lora_rank: int = 64
    startup_timeout_s: float = 900.0  # vLLM on 2 loaded cores starts in 1-3 minutes
    extra_args: list[str] = field(default_factory=list)
    asked_by: str = "--engine vllm"   # who wants vLLM, and the option naming its command (for error lines)
    command_option: str = "--vllm-command"


def find_vllm(command: Optional[str] = None, option: str = "--vllm-command") -> Optional[str]:
    """The `vllm` executable to run: the one named, else $WEBTUNE_VLLM, ./.venv-vllm, PATH."""
    for candidate in (command, os.environ.get("WEBTUNE_VLLM"), str(Path(DEFAULT_VENV) / "bin" / "vllm"), "vllm"):
        if not candidate:
            continue
        path = Path(candidate)
        if path.is_dir():  # a virtual environment
            path = path / "bin" / "vllm"
        found = str(path) if path.is_file() and os.access(path, os.X_OK) else shutil.which(candidate)
        if found:
            return found
        if candidate == command:
            raise WebtuneError(f"{option} {command}: no vllm executable there; create vLLM's environment "
                               f"with `make vllm` (scripts/vllm_env.sh) or point at an existing install")
    return None


def require_vllm(settings: VllmSettings) -> str:
    """The `vllm` executable, or a one-line error saying how to get one."""
    found = find_vllm(settings.command, settings.command_option)
    if found is None:
        raise WebtuneError(f"{settings.asked_by}: no vLLM found; create its environment with `make vllm` "
                           f"(scripts/vllm_env.sh), or name one with {settings.command_option} / $WEBTUNE_VLLM")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """One `vllm serve` child on 127.0.0.1 for one model directory (a base, or a merged model)."""

    def __init__(self, model_dir: Path, settings: VllmSettings, lora: bool):
        self.model_dir, self.settings, self.lora = Path(model_dir).resolve(), settings, lora
        self.command = require_vllm(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.served_name = "base"
        self.adapters: Counter[str] = Counter()  # loaded adapter -> engines using it
        self.users = 0
        self.proc: Optional[subprocess.Popen] = None
        self.max_model_len = settings.max_model_len
        self._client: Any = None
        self.log_path = Path(tempfile.mkstemp(prefix="webtune-vllm-", suffix=".log")[1])

    def args(self) -> list[str]:
        from transformers import AutoConfig

        own = getattr(AutoConfig.from_pretrained(self.model_dir), "max_position_embeddings", None)
        length = self.max_model_len = min(self.settings.max_model_len, own or self.settings.max_model_len)
        args = [self.command, "serve", str(self.model_dir), "--host", "127.0.0.1", "--port", str(self.port),
                "--served-model-name", self.served_name, "--max-model-len", str(length),
                "--kv-cache-memory-bytes", str(int(self.settings.kv_cache_gib * 2**30)),
                "--generation-config", "vllm", "--disable-uvicorn-access-log"]
        if not gpu_present():  # vLLM's CPU backend: float32 as our engine, no compile (5-6 min to start)
            args += ["--dtype", "float32", "--enforce-eager"]
        if self.lora:
            args += ["--enable-lora", "--max-loras", str(self.settings.max_loras),
                     "--max-lora-rank", str(self.settings.max_lora_rank)]
        return args + list(self.settings.extra_args)

    def start(self) -> "VllmServer":
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Start the child without waiting for it (it loads for a minute or more: wait_ready)."""
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_NO_USAGE_STATS": "1",
               "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
        if not gpu_present():
            env["VLLM_TARGET_DEVICE"] = "cpu"
        log.info("starting vLLM (%s) for %s on 127.0.0.1:%d; its log: %s", self.command, self.model_dir,
                 self.port, self.log_path)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.args(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WebtuneError(f"vLLM exited ({self.proc.returncode}) while starting for {self.model_dir}: "
                                   f"{self.last_error()} (whole log: {self.log_path})")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.close()
        raise WebtuneError(f"vLLM did not answer on {self.url} within {self.settings.startup_timeout_s:.0f} s "
                           f"(log: {self.log_path})")

    def last_error(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        errors = [line for line in lines if "Error" in line or "error" in line]
        return (errors or lines or ["no output"])[-1].strip()[:400]

    def client(self) -> Any:
        """One pooled HTTP client for every sequence sent to this child (made on the event loop)."""
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(None, connect=10),
                                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))
        return self._client

    def load_adapter(self, name: str, path: Path) -> None:
        """Load a LoRA adapter under `name` (vLLM's runtime LoRA update; no restart)."""
        if self.adapters[name]:
            self.adapters[name] += 1
            return
        rank = json.loads((Path(path) / "adapter_config.json").read_text()).get("r", 0)
        if rank > self.settings.max_lora_rank:
            raise WebtuneError(f"{path}: LoRA rank {rank} is above the vLLM server's --max-lora-rank "
                               f"{self.settings.max_lora_rank}; restart `webtune serve` with a larger "
                               f"--vllm-max-lora-rank")
        load_lora(self.url, name, path)
        self.adapters[name] += 1

    def unload_adapter(self, name: str) -> None:
        self.adapters[name] -= 1
        if self.adapters[name] <= 0:
            del self.adapters[name]
            if self.running:
                unload_lora(self.url, name)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Stop the child and its workers (it runs in its own process group)."""
        if not self.running:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def load_lora(url: str, name: str, path: Path) -> None:
    """Load a LoRA adapter into the vLLM server at `url` under `name` (needs the server's
    VLLM_ALLOW_RUNTIME_LORA_UPDATING and --enable-lora)."""
    import httpx

    if json.loads((Path(path) / "adapter_config.json").read_text()).get("trainable_token_indices"):
        raise WebtuneError(f"{path}: this adapter also trains token rows (model.lora.trainable_tokens, e.g. Gemma 3's "
                           f"turn markers), which vLLM's LoRA cannot load: use --engine transformers (or "
                           f"eval.engine=transformers), or `webtune export --format merged` and serve the merged model")
    r = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(Path(path).resolve())},
                   timeout=600)
    if r.status_code != 200:
        raise WebtuneError(f"{path}: vLLM refused the LoRA adapter ({r.status_code}): {r.text[:300]}")


def unload_lora(url: str, name: str) -> None:
    import httpx

    httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60)


def gpu_present() -> bool:
    import torch

    return torch.cuda.is_available()
