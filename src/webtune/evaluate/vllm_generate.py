"""`eval.engine: vllm`: evaluate's greedy held-out generations decoded by vLLM (faster on many prompts).

The prompts are rendered by the chat tokenizer training used and sent as token ids (as `serve --engine
vllm` does), every prompt at once so vLLM batches them; the answers come back as token ids and the
stage decodes them exactly as it decodes the transformers engine's. So the two engines' answers differ
only where their arithmetic picks another greedy token. The losses stay on transformers (the stage
loads each model for them anyway).

One vLLM child (vllm_server.VllmServer) serves the base; the tuned model and eval.compare_to's
promoted version, when they are LoRA adapters, are loaded into it at runtime; a full model gets a
child of its own in turn. A child is started while the stage computes the model's losses.
`eval.vllm.url` uses an already running vLLM server instead (it must serve the base by its folder,
and for adapters run with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True).
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

from ..errors import WebtuneError
from ..fileio import sha256_text
from ..vllm_server import LORA_RANKS, VllmServer, VllmSettings, load_lora, require_vllm, unload_lora


def is_adapter(path: str | Path) -> bool:
    return Path(path, "adapter_config.json").exists() and not Path(path, "config.json").exists()


def lora_rank(path: str | Path) -> int:
    return int(json.loads(Path(path, "adapter_config.json").read_text()).get("r") or 0)


def same_folder(a: str | None, b: str | Path) -> bool:
    return a is not None and (a == str(b) or Path(a).exists() and Path(a).resolve() == Path(b).resolve())


class VllmGenerator:
    """The vLLM side of one evaluation: `launch(path)` early, `generate(path, ...)` later, `close()`."""

    def __init__(self, e, base: str, models: list[str], max_model_len: int):
        """`models`: the folders whose answers will be generated; `max_model_len`: the longest prompt
        plus eval.max_new_tokens (what the child plans its KV cache for)."""
        adapters = [m for m in models if is_adapter(m)]
        rank = max([lora_rank(a) for a in adapters] or [0])
        self.settings = VllmSettings(command=e.vllm.command, kv_cache_gib=e.vllm.kv_cache_gib,
                                     max_model_len=max_model_len, max_loras=max(1, len(adapters)),
                                     max_lora_rank=next((r for r in LORA_RANKS if r >= rank), rank),
                                     asked_by="eval.engine=vllm", command_option="eval.vllm.command")
        self.base, self.lora, self.url = base, bool(adapters), e.vllm.url
        self.server: Optional[VllmServer] = None   # the child now running
        if not self.url:
            require_vllm(self.settings)   # before any scoring: a missing vLLM is said at once

    def folder_for(self, path: str) -> str:
        """The folder vLLM loads to answer as `path`: the base for an adapter, else `path` itself."""
        return self.base if is_adapter(path) else path

    def launch(self, path: str) -> None:
        """Start (without waiting) the child that will answer as `path`, unless it runs already."""
        if self.url:
            return
        folder = Path(self.folder_for(path)).resolve()
        if self.server and self.server.running and self.server.model_dir == folder:
            return
        self.close()
        self.server = VllmServer(folder, self.settings, lora=self.lora and same_folder(self.base, folder))
        self.server.launch()

    def served_model(self, path: str) -> tuple[str, str]:
        """(server URL, model id) that answers as `path`; an adapter is loaded into the server."""
        if self.url:
            url, name = self.url.rstrip("/"), self.served_name(self.folder_for(path))
        else:
            self.launch(path)
            self.server.wait_ready()
            url, name = self.server.url, self.server.served_name
        if is_adapter(path):
            name = f"eval-{sha256_text(str(Path(path).resolve()))[:12]}"
            if self.server:
                self.server.load_adapter(name, Path(path))
            else:
                load_lora(url, name, Path(path))
        return url, name

    def served_name(self, folder: str) -> str:
        """The id under which the server at eval.vllm.url serves `folder` (its /v1/models `root`)."""
        import httpx
        try:
            cards = httpx.get(f"{self.url.rstrip('/')}/v1/models", timeout=30).json()["data"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise WebtuneError(f"eval.vllm.url={self.url}: no vLLM server answers there ({exc})") from exc
        for card in cards:
            if not card.get("parent") and same_folder(card.get("root"), folder):
                if (card.get("max_model_len") or 1 << 30) < self.settings.max_model_len:
                    raise WebtuneError(f"eval.vllm.url={self.url} serves {folder} with max_model_len "
                                       f"{card['max_model_len']}; the evaluation needs {self.settings.max_model_len}")
                return card["id"]
        raise WebtuneError(f"eval.vllm.url={self.url} does not serve {folder} (it serves "
                           f"{', '.join(str(c.get('root')) for c in cards)}); start it with that folder")

    def generate(self, path: str, prompt_ids: list[list[int]], max_new_tokens: int, eos: list[int],
                 bar=None, what: str = "generate") -> list[list[int]]:
        """Each prompt's greedy new token ids (the end-of-turn token included where it stopped)."""
        import httpx
        if not prompt_ids:
            return []
        url, model = self.served_model(path)
        task = bar.add_task(what, total=len(prompt_ids)) if bar else None
        out: list[list[int]] = [[] for _ in prompt_ids]
        with httpx.Client(base_url=url, timeout=httpx.Timeout(None, connect=30)) as client, \
                ThreadPoolExecutor(max_workers=min(32, len(prompt_ids))) as pool:
            def one(ids: list[int]) -> list[int]:
                r = client.post("/v1/completions", json={
                    "model": model, "prompt": ids, "max_tokens": max_new_tokens, "temperature": 0,
                    "stop_token_ids": eos, "return_token_ids": True})
                if r.status_code != 200:
                    raise WebtuneError(f"eval.engine=vllm: vLLM answered {r.status_code}: {r.text[:300]}")
                return r.json()["choices"][0]["token_ids"]
            futures = {pool.submit(one, ids): i for i, ids in enumerate(prompt_ids)}
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                if bar:
                    bar.advance(task)
        if is_adapter(path):
            if self.server:
                self.server.unload_adapter(model)
            else:
                unload_lora(url, model)
        return out

    def close(self) -> None:
        if self.server:
            self.server.close()
            self.server = None
