"""One redaction for every secret that can come back in an error: a server that quotes the key it
refused (tests/fakes/openai_server.py with `echo_key`) must not put it on the console or in
run.log, through the CLI or through any client (train, chat, evaluate, judge)."""
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.fakes.openai_server import FakeOpenAI
from webtune.config import JudgeConfig
from webtune.errors import WebtuneError, one_line
from webtune.redaction import MASK, RedactingFormatter, redact, secret_env

REPO = Path(__file__).resolve().parents[1]
SK_KEY = "sk-proj-wrong-0123456789abcdefXYZ"   # the shape of an OpenAI key
PLAIN_ENV, PLAIN_KEY = "WEBTUNE_TEST_PLAIN", "plain-wrong-value-4242"  # neither the name nor the value look secret


@pytest.fixture
def echoing():
    with FakeOpenAI(api_key="sk-the-right-one-000000000000") as fake:
        fake.echo_key = True
        yield fake


def test_a_key_echoed_in_a_401_reaches_neither_the_console_nor_run_log(echoing, tmp_path):
    env = {**os.environ, "WEBTUNE_TEST_LEAK": SK_KEY, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, "-m", "webtune", "run", "model=openai_gpt4o_mini",
                        f"model.base_url={echoing.base_url}", "model.api_key_env=WEBTUNE_TEST_LEAK",
                        f"runs_dir={tmp_path / 'runs'}", "name=leak"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "answered 401" in r.stderr and f"Incorrect API key provided: {MASK}" in r.stderr
    assert SK_KEY not in r.stdout + r.stderr
    (run_log,) = (tmp_path / "runs").glob("*_leak/run.log")
    assert "Traceback" in run_log.read_text() and MASK in run_log.read_text()  # the traceback is there, masked
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert SK_KEY not in path.read_text(errors="replace"), path


def _judge(fake):
    from webtune.evaluate import judge
    cfg = OmegaConf.merge(OmegaConf.structured(JudgeConfig), {"base_url": fake.base_url, "api_key_env": PLAIN_ENV})
    job = {"pair": 0, "order": "tuned_first", "messages": [{"role": "user", "content": "A or B?"}]}
    judge.ask(judge.make_client(cfg), cfg, job)


def _api_eval(fake):
    from webtune.evaluate.api_eval import complete
    from webtune.openai_client import make_client
    complete(make_client(PLAIN_ENV, fake.base_url), "gpt-4o-mini", [{"role": "user", "content": "hi"}], 8, PLAIN_ENV)


def _chat(fake, tmp_path):
    from webtune.train import openai_ft
    record = tmp_path / "openai_model.json"
    record.write_text(json.dumps({"fine_tuned_model": "ft:gpt-4o-mini:x", "api_key_env": PLAIN_ENV,
                                  "base_url": fake.base_url}))
    openai_ft.chat(record, [{"role": "user", "content": "hi"}], max_retries=0)


def _train(fake, tmp_path):
    from webtune.config import ModelConfig
    from webtune.train import openai_ft
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"}]}
    for name, n in (("train", 10), ("val", 1)):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / f"{name}.jsonl").write_text((json.dumps(row) + "\n") * n)
    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), {
        "kind": "openai", "name": "gpt-4o-mini", "name_or_path": "gpt-4o-mini-2024-07-18", "api_key_env": PLAIN_ENV,
        "base_url": fake.base_url, "poll_interval": 0.01})
    from rich.console import Console
    openai_ft.train(OmegaConf.create({"name": "p", "model": model}), tmp_path,
                    console=Console(file=io.StringIO()))


@pytest.mark.parametrize("client", [_judge, _api_eval, _chat, _train])
def test_every_openai_client_masks_an_echoed_key(echoing, tmp_path, monkeypatch, client):
    monkeypatch.setenv(PLAIN_ENV, PLAIN_KEY)
    with pytest.raises(WebtuneError) as err:
        client(*([echoing, tmp_path] if client in (_chat, _train) else [echoing]))
    assert "401" in str(err.value) and PLAIN_KEY not in str(err.value) and MASK in str(err.value)


def test_redact_masks_read_named_and_shaped_secrets(monkeypatch):
    monkeypatch.setenv("WEBTUNE_TEST_READ", "read-through-secret-env")
    monkeypatch.setenv("SOME_SERVICE_API_TOKEN", "named-like-a-token-123")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # a secret-ish name, a short value: left alone
    assert secret_env("WEBTUNE_TEST_READ") == "read-through-secret-env"
    text = ("read-through-secret-env named-like-a-token-123 sk-abcdefgh12345678 hf_" + "a" * 30 +
            " Authorization: Bearer abc.def-ghi_123 false sk-short")
    assert redact(text) == f"{MASK} {MASK} {MASK} {MASK} Authorization: Bearer {MASK} false sk-short"
    assert redact("x extra-secret-value y", "extra-secret-value") == f"x {MASK} y"
    assert one_line(RuntimeError("failed with\nnamed-like-a-token-123")) == f"RuntimeError: failed with {MASK}"
    # the log formatter, traceback included
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    log = logging.getLogger("webtune.test_redaction")
    log.addHandler(handler)
    try:
        try:
            raise ValueError("Incorrect API key provided: read-through-secret-env")
        except ValueError:
            log.error("request with %s failed", "named-like-a-token-123", exc_info=True)
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "Traceback" in out and "read-through-secret-env" not in out and "named-like-a-token-123" not in out
