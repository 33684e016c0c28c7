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
from pathlib import Path
from typing import Any, Iterator

import orjson

from webtune.deploy.generate import Generation, GenerationSettings, LocalModel
from webtune.errors import WebtuneError
from webtune.vllm_server import DEFAULT_VENV, VllmServer, VllmSettings, find_vllm  # noqa: F401 (the engine's API)

log = logging.getLogger("uvicorn.error")


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
    return orjson.loads(line[6:]).get("choices", [])


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
