"""The one way webtune talks to an OpenAI-compatible API: the client (key from the environment only),
SDK errors as one line, and the record of a fine-tuned model that train writes and evaluate, chat and
the registry read."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from .errors import WebtuneError
from .redaction import redact, secret_env

MODEL_FILE = "openai_model.json"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def make_client(api_key_env: str = "OPENAI_API_KEY", base_url: Optional[str] = None, *, setting: str = "model.api_key_env",
                max_retries: int = 2, timeout: float = 120.0, keyless_loopback: bool = False, hint: str = ""):
    """An `openai.OpenAI` client. `setting` names the config key in the error (`hint` adds another way
    out); `keyless_loopback` lets a local `webtune serve` on 127.0.0.1 go without a key."""
    try:
        from openai import OpenAI
    except ImportError:
        raise WebtuneError("talking to an OpenAI-compatible API needs the openai package: "
                           "pip install 'webtune[openai]'") from None
    key = secret_env(api_key_env)
    if not key:
        if not (keyless_loopback and base_url and urlsplit(base_url).hostname in LOOPBACK):
            raise WebtuneError(f"{setting}: environment variable {api_key_env} is not set; export it with your "
                               f"API key (webtune never writes the key to the run directory){hint}")
        key = "unused"   # the SDK wants a value; the local server asks for none
    return OpenAI(api_key=key, base_url=base_url or None, max_retries=max_retries, timeout=timeout)


def api_error(exc: Exception, doing: str, api_key_env: str = "OPENAI_API_KEY") -> WebtuneError:
    """One line for an SDK exception: status, code, message, param; a key the server echoed is masked."""
    import openai
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or str(exc)
        code = body.get("code") or getattr(exc, "code", None)
        param = body.get("param")
        hint = f"; check the key in {api_key_env}" if exc.status_code == 401 else ""
        where = f", param: {param}" if param else ""
        return WebtuneError(redact(f"OpenAI answered {exc.status_code} while {doing}: "
                                   f"{code or exc.__class__.__name__}: {message}{where}{hint}"))
    if isinstance(exc, openai.APIConnectionError):
        return WebtuneError(redact(f"could not reach the OpenAI API while {doing} ({exc.__class__.__name__}: "
                                   f"{exc}); check model.base_url and the network"))
    return WebtuneError(redact(f"OpenAI error while {doing}: {exc}"))


def load_model_record(model_json: Path) -> dict:
    """RUN/model/openai_model.json, a model directory holding it, or a registry version's record."""
    path = Path(model_json)
    if path.is_dir():
        path = path / MODEL_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WebtuneError(f"{path}: no OpenAI model record; train the run first") from None
    except json.JSONDecodeError as exc:
        raise WebtuneError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    model = record.get("fine_tuned_model") or record.get("model")   # the registry stores it as "model"
    if not model:
        raise WebtuneError(f"{path}: field fine_tuned_model is missing; the job may not have succeeded")
    return {**record, "fine_tuned_model": model}
