"""`webtune chat TARGET`: a terminal chat with a registered model, a run's model or an OpenAI model.

TARGET is `NAME[@vN]` (from the registry), a run directory (its `model/`), a model directory, or
`openai:MODEL_ID`. Local models are prompted with exactly the chat template saved with their
tokenizer (the one they were trained with); replies stream token by token.

Input: a line is one message; a line ending in `\\` continues on the next; a line `\"\"\"` opens a
block that the next `\"\"\"` line closes. Commands: /reset, /system TEXT, /set KEY VALUE
(temperature, top_p, max_tokens, seed), /prompt (the conversation as the model sees it), /help,
/exit.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Iterator, Optional, TextIO

from webtune.deploy import registry as reg
from webtune.deploy.generate import GenerationSettings, TextStream, load_model
from webtune.errors import WebtuneError
from webtune.openai_client import make_client

HELP = ("/reset  forget the conversation (keeps the system prompt)\n"
        "/system TEXT  set the system prompt (empty: none)\n"
        "/set KEY VALUE  temperature, top_p, max_tokens or seed\n"
        "/prompt  show the conversation as the model sees it\n"
        "/exit  leave (or Ctrl-D)\n"
        "A line ending in \\ continues; a line \"\"\" opens a block closed by another \"\"\".")


class LocalChat:
    def __init__(self, model_dir: Path):
        self.lm = load_model(model_dir)
        self.label = str(model_dir)

    def stream(self, messages: list[dict], settings: GenerationSettings) -> Iterator[str]:
        return iter(TextStream(self.lm, self.lm.chat_prompt_ids(messages), settings))

    def render(self, messages: list[dict]) -> str:
        return self.lm.tokenizer.apply_chat_template(self.lm.with_system(messages), tokenize=False,
                                                     add_generation_prompt=not messages or
                                                     messages[-1]["role"] != "assistant")


class VllmChat(LocalChat):
    """The same conversation, rendered by webtune, decoded by vLLM (a child process: vllm_engine)."""

    def __init__(self, model_dir: Path, vllm_command: Optional[str]):
        import atexit

        from .vllm_engine import VllmPool, VllmSettings, load_front

        self.lm = load_front(model_dir)
        self.label = f"{model_dir} (vLLM)"
        self.pool = VllmPool(VllmSettings(command=vllm_command))
        atexit.register(self.pool.close)
        self.engine = self.pool.engine(self.lm, "chat")

    def stream(self, messages: list[dict], settings: GenerationSettings) -> Iterator[str]:
        from .vllm_engine import stream_text

        return stream_text(self.engine, self.lm.chat_prompt_ids(messages), settings)


class OpenAIChat:
    def __init__(self, model_id: str, base_url: Optional[str], api_key_env: Optional[str]):
        self.client = make_client(api_key_env or "OPENAI_API_KEY", base_url or os.environ.get("OPENAI_BASE_URL"),
                                  setting=f"chat with openai:{model_id}: --api-key-env")
        self.model_id = model_id
        self.label = f"openai:{model_id}"

    def stream(self, messages: list[dict], settings: GenerationSettings) -> Iterator[str]:
        import openai

        try:
            resp = self.client.chat.completions.create(
                model=self.model_id, messages=messages, stream=True, temperature=settings.temperature,
                top_p=settings.top_p, max_tokens=settings.max_tokens, seed=settings.seed,
                stop=settings.stop or None)
            for chunk in resp:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except openai.APIError as e:  # the conversation goes on; the user can retry or /exit
            raise WebtuneError(f"{self.label}: {type(e).__name__}: {getattr(e, 'message', e)}") from None

    def render(self, messages: list[dict]) -> str:
        return "(the OpenAI API applies its own template to:)\n" + json.dumps(messages, indent=2)


def open_target(target: str, registry: str | Path = "runs/registry", base_url: Optional[str] = None,
                api_key_env: Optional[str] = None, engine: str = "transformers", vllm_command: Optional[str] = None):
    """`NAME[@vN]`, a run or model directory, or `openai:MODEL_ID` -> a chat backend. An OpenAI
    model's record (from the run or the registry) supplies base_url and api_key_env unless given."""
    if target.startswith("openai:"):
        return OpenAIChat(target.split(":", 1)[1], base_url, api_key_env)
    path = Path(target)
    if not path.is_dir():
        path = reg.resolve(registry, target)  # a registry name, or a one-line error
    model_dir = path / "model" if (path / "model").is_dir() else path
    if (model_dir / "config.json").exists() or (model_dir / "adapter_config.json").exists():
        if engine == "auto":
            from .vllm_engine import find_vllm
            engine = "vllm" if find_vllm(vllm_command) else "transformers"
        return VllmChat(model_dir, vllm_command) if engine == "vllm" else LocalChat(model_dir)
    record = reg.find_openai_model(path) or reg.find_openai_model(model_dir)
    if record:
        return OpenAIChat(record["model"], base_url or record.get("base_url"),
                          api_key_env or record.get("api_key_env"))
    raise WebtuneError(f"{target}: no model found (expected a run directory with model/, a model "
                       f"directory, NAME[@vN] from the registry, or openai:MODEL_ID)")


def read_message(stdin: TextIO, stdout: TextIO, interactive: bool) -> Optional[str]:
    """One message from the user: a line, `\\`-continued lines, or a \"\"\" block. None at EOF."""
    def prompt(text: str) -> None:
        if interactive:
            stdout.write(text)
            stdout.flush()

    prompt(">>> ")
    line = stdin.readline()
    if not line:
        return None
    line = line.rstrip("\n")
    if line.strip() == '"""':
        block = []
        while True:
            prompt("... ")
            nxt = stdin.readline()
            if not nxt or nxt.strip() == '"""':
                return "\n".join(block)
            block.append(nxt.rstrip("\n"))
    parts = []
    while line.endswith("\\"):
        parts.append(line[:-1])
        prompt("... ")
        nxt = stdin.readline()
        if not nxt:
            break
        line = nxt.rstrip("\n")
    else:
        parts.append(line)
    return "\n".join(parts)


def _set(settings: GenerationSettings, arg: str) -> str:
    key, _, value = arg.partition(" ")
    types = {f.name: f for f in fields(GenerationSettings) if f.name != "stop"}
    if key not in types or not value.strip():
        raise WebtuneError(f"/set takes one of {', '.join(types)} and a value, e.g. /set temperature 0.2")
    try:
        parsed = float(value) if key in ("temperature", "top_p") else int(value)
    except ValueError:
        raise WebtuneError(f"/set {key}: {value.strip()!r} is not a number") from None
    setattr(settings, key, parsed)
    return f"{key} = {parsed}"


def chat_repl(target: str, registry: str | Path = "runs/registry", system: Optional[str] = None,
              temperature: float = 0.7, top_p: float = 1.0, max_tokens: int = 256, seed: Optional[int] = None,
              base_url: Optional[str] = None, api_key_env: Optional[str] = None,
              stdin: TextIO = None, stdout: TextIO = None, stderr: TextIO = None,
              engine: str = "transformers", vllm_command: Optional[str] = None) -> None:
    """Chat with TARGET until /exit or end of input. Replies go to stdout; notes to stderr."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    from rich.console import Console

    with Console(file=stderr).status(f"loading {target}"):
        backend = open_target(target, registry, base_url, api_key_env, engine, vllm_command)
    settings = GenerationSettings(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    interactive = stdin.isatty()
    history: list[dict] = []
    stderr.write(f"chatting with {backend.label}; /help for commands, /exit to leave\n")

    def conversation() -> list[dict]:
        return ([{"role": "system", "content": system}] if system else []) + history

    while True:
        text = read_message(stdin, stdout, interactive)
        if text is None or text.strip() in ("/exit", "/quit"):
            return
        cmd, _, arg = text.strip().partition(" ")
        try:
            if cmd == "/reset":
                history.clear()
                stderr.write("conversation cleared\n")
            elif cmd == "/system":
                system = arg.strip() or None
                stderr.write(f"system prompt {'set' if system else 'cleared'}\n")
            elif cmd == "/set":
                stderr.write(_set(settings, arg.strip()) + "\n")
            elif cmd == "/prompt":
                stdout.write(backend.render(conversation()) + "\n")
            elif cmd == "/help":
                stderr.write(HELP + "\n")
            elif cmd.startswith("/") and " " not in cmd and cmd[1:].isalpha():
                stderr.write(f"unknown command {cmd}; /help lists them\n")
            elif text.strip():
                user = {"role": "user", "content": text}
                reply = []
                try:
                    for piece in backend.stream(conversation() + [user], settings):
                        reply.append(piece)
                        stdout.write(piece)
                        stdout.flush()
                except KeyboardInterrupt:
                    stderr.write("\n[interrupted]\n")
                stdout.write("\n")
                stdout.flush()
                history += [user, {"role": "assistant", "content": "".join(reply)}]
        except WebtuneError as e:
            stderr.write(f"error: {e}\n")
