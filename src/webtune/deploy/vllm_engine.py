"""`webtune serve --engine vllm`: vLLM's OpenAI server as a child process on loopback, decoding what
webtune's front (names, NAME@vN, keys, limits, request logs, the run's chat template) sends it.

vLLM lives in its own environment (`scripts/vllm_env.sh`, `make vllm`: `.venv-vllm`); `--vllm-command`
(or `$WEBTUNE_VLLM`) names another `vllm` executable. One child serves a base model; each served
version that is a LoRA adapter is loaded into it at runtime (`POST /v1/load_lora_adapter`, with
VLLM_ALLOW_RUNTIME_LORA_UPDATING), so `models promote` swaps adapters without a restart; a version
that is a full (merged) model gets a child of its own.

webtune keeps rendering prompts with the version's own chat template and sends vLLM token ids
(`/v1/completions`, `prompt: [ids]`, `return_token_ids`), so both engines decode the same ids and
stop on the same end-of-turn tokens (`stop_token_ids`); vLLM never applies a template of its own
here. Greedy answers equal the transformers engine's; seeded sampling follows vLLM's generator, not
ours, so a seed gives other (still reproducible) text than `--engine transformers`.
"""
from __future__ import annotations

import asyncio
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
from typing import Any, Iterator, Optional

from webtune.deploy.generate import Generation, GenerationSettings, LocalModel
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


def find_vllm(command: Optional[str] = None) -> Optional[str]:
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
            raise WebtuneError(f"--vllm-command {command}: no vllm executable there; create vLLM's environment "
                               f"with `make vllm` (scripts/vllm_env.sh) or point at an existing install")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """One `vllm serve` child on 127.0.0.1 for one model directory (a base, or a merged model)."""

    def __init__(self, model_dir: Path, settings: VllmSettings, lora: bool):
        self.model_dir, self.settings, self.lora = Path(model_dir).resolve(), settings, lora
        self.command = find_vllm(settings.command)
        if self.command is None:
            raise WebtuneError("--engine vllm: no vLLM found; create its environment with `make vllm` "
                               "(scripts/vllm_env.sh), or name one with --vllm-command / $WEBTUNE_VLLM")
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
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_NO_USAGE_STATS": "1",
               "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
        if not gpu_present():
            env["VLLM_TARGET_DEVICE"] = "cpu"
        log.info("starting vLLM (%s) for %s on 127.0.0.1:%d; its log: %s", self.command, self.model_dir,
                 self.port, self.log_path)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.args(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready()
        return self

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
        import httpx

        if self.adapters[name]:
            self.adapters[name] += 1
            return
        rank = json.loads((Path(path) / "adapter_config.json").read_text()).get("r", 0)
        if rank > self.settings.max_lora_rank:
            raise WebtuneError(f"{path}: LoRA rank {rank} is above the vLLM server's --max-lora-rank "
                               f"{self.settings.max_lora_rank}; restart `webtune serve` with a larger "
                               f"--vllm-max-lora-rank")
        r = httpx.post(f"{self.url}/v1/load_lora_adapter", json={"lora_name": name,
                                                                  "lora_path": str(Path(path).resolve())},
                       timeout=600)
        if r.status_code != 200:
            raise WebtuneError(f"{path}: vLLM refused the LoRA adapter ({r.status_code}): {r.text[:300]}")
        self.adapters[name] += 1

    def unload_adapter(self, name: str) -> None:
        import httpx

        self.adapters[name] -= 1
        if self.adapters[name] <= 0:
            del self.adapters[name]
            if self.running:
                httpx.post(f"{self.url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60)

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


class VllmPool:
    """The vLLM children of one `webtune serve`: one per base model (its versions' adapters loaded
    into it) or merged model. `engine(lm, label)` is what the server's engine factory returns."""

    def __init__(self, settings: VllmSettings):
        self.settings = settings
        self.servers: dict[Path, VllmServer] = {}

    def factory(self, name: str):
        """The server's engine factory: each loaded version as model id NAME@vN (a run: NAME)."""
        def make(lm: LocalModel) -> "VllmEngine":
            version = lm.path.parent.name if lm.path.name == "model" and lm.path.parent.name[1:].isdigit() else None
            return self.engine(lm, f"{name}@{version}" if version else name)
        return make

    def engine(self, lm: LocalModel, model_id: str) -> "VllmEngine":
        adapter = lm.path / "adapter_config.json"
        base = Path(json.loads(adapter.read_text())["base_model_name_or_path"]) if adapter.exists() else lm.path
        key = base.resolve()
        server = self.servers.get(key)
        if server is None or not server.running:
            server = self.servers[key] = VllmServer(base, self.settings, lora=adapter.exists()).start()
        if adapter.exists():
            server.load_adapter(model_id, lm.path)
        server.users += 1
        lm.max_context = min(lm.max_context, server.max_model_len)  # what vLLM plans for; longer is a 400
        return VllmEngine(self, server, model_id if adapter.exists() else server.served_name, lm)

    def release(self, engine: "VllmEngine") -> None:
        server = engine.server
        server.users -= 1
        if engine.model != server.served_name:
            server.unload_adapter(engine.model)
        if server.users == 0 and not server.lora:  # a merged model's child goes with its last version
            server.close()
            self.servers.pop(server.model_dir, None)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()


class Sequence:
    def __init__(self, task: "asyncio.Task"):
        self.task = task

    def cancel(self) -> None:
        self.task.cancel()


class VllmEngine:
    """The `serve_engine.Engine` of one served version: each sequence is one streamed
    `/v1/completions` request to the vLLM child, with the prompt as token ids."""

    def __init__(self, pool: VllmPool, server: VllmServer, model: str, lm: LocalModel):
        self.pool, self.server, self.model, self.lm = pool, server, model, lm
        self.closed = False

    def submit(self, prompt_ids: list[int], settings: GenerationSettings, max_new: int, emit,
               group: Any = None) -> Sequence:
        """Called on the event loop's thread (serve_engine.decode): the request runs as a task on it."""
        return Sequence(asyncio.get_running_loop().create_task(self.run(prompt_ids, settings, max_new, emit)))

    def request(self, prompt_ids: list[int], settings: GenerationSettings, max_new: int) -> dict[str, Any]:
        body = {"model": self.model, "prompt": prompt_ids, "max_tokens": max_new, "stream": True,
                "temperature": settings.temperature, "top_p": settings.top_p, "stop": settings.stop or None,
                "stop_token_ids": self.lm.eos_ids, "return_token_ids": True, "skip_special_tokens": True}
        if settings.seed is not None:
            body["seed"] = settings.seed
        return body

    async def run(self, prompt_ids: list[int], settings: GenerationSettings, max_new: int, emit) -> None:
        text, ids, finish = [], [], "length"
        try:
            async with self.server.client().stream("POST", "/v1/completions",
                                          json=self.request(prompt_ids, settings, max_new)) as r:
                if r.status_code != 200:
                    raise WebtuneError(f"vLLM answered {r.status_code}: {(await r.aread()).decode()[:300]}")
                async for line in r.aiter_lines():
                    for choice in choices(line):
                        piece = choice.get("text") or ""
                        ids += choice.get("token_ids") or []
                        if piece:
                            text.append(piece)
                            emit(piece, None)
                        finish = choice.get("finish_reason") or finish
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the server reports it to the client (serve_engine.decode raises it)
            if not self.server.running:  # say why, not "ConnectError"
                e = WebtuneError(f"the vLLM engine exited ({self.server.proc.returncode}): "
                                 f"{self.server.last_error()} (log: {self.server.log_path})")
                log.error(str(e))
            emit("", e)
            return
        emit("", Generation("".join(text), ids, "stop" if finish == "stop" else "length", len(prompt_ids)))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.release(self)


def choices(line: str) -> list[dict]:
    """The choices of one server-sent event line of a streamed /v1/completions answer."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return []
    return json.loads(line[6:]).get("choices", [])


def stream_text(engine: VllmEngine, prompt_ids: list[int], settings: GenerationSettings) -> Iterator[str]:
    """One completion's text pieces, synchronously (for `webtune chat --engine vllm`)."""
    import httpx

    max_new = settings.max_tokens or engine.lm.max_context - len(prompt_ids)
    body = engine.request(prompt_ids, settings, max_new)
    with httpx.stream("POST", f"{engine.server.url}/v1/completions", json=body, timeout=None) as r:
        if r.status_code != 200:
            raise WebtuneError(f"vLLM answered {r.status_code}: {r.read().decode()[:300]}")
        for line in r.iter_lines():
            for choice in choices(line):
                if choice.get("text"):
                    yield choice["text"]


class ModelInfo:
    """What the server reads of a model it does not load itself (vLLM holds the weights): its
    config (context length) and generation config (EOS ids)."""

    def __init__(self, path: Path):
        from transformers import AutoConfig, GenerationConfig

        adapter = path / "adapter_config.json"
        weights = Path(json.loads(adapter.read_text())["base_model_name_or_path"]) if adapter.exists() else path
        self.config = AutoConfig.from_pretrained(weights)
        try:
            self.generation_config = GenerationConfig.from_pretrained(weights)
        except OSError:
            self.generation_config = GenerationConfig.from_model_config(self.config)
        self.device = "cpu"


def load_front(path: str | Path) -> LocalModel:
    """The served version as webtune's front needs it with vLLM decoding: tokenizer and chat
    template (the same as `load_model`'s), config and generation config, no weights."""
    from webtune.deploy.generate import load_tokenizer

    path = Path(path)
    return LocalModel(ModelInfo(path), load_tokenizer(path), path)


def gpu_present() -> bool:
    import torch

    return torch.cuda.is_available()
