"""`webtune chat` driven through stdin in a subprocess: streamed replies with the saved chat template,
multi-line input, /system, /reset, /set, /prompt, /exit; local, registry and openai: targets."""
import json
import os
import subprocess
import sys

import pytest

from webtune.deploy import registry as reg
from webtune.deploy.generate import GenerationSettings, generate, load_model, make_tiny_chat_model
from webtune.deploy.serve import create_app
from tests.fakes.asgi import running


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("chat") / "run"
    make_tiny_chat_model(run / "model", seed=3)
    (run / "metrics.json").write_text(json.dumps({"eval": {"passed": True, "flags": []}}))
    (run / "config.yaml").write_text("name: shop\n")
    return run


@pytest.fixture(scope="module")
def lm(run_dir):
    return load_model(run_dir / "model")


def chat(*args, stdin: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webtune", "chat", *args], input=stdin, text=True,
                          capture_output=True, timeout=120, env={**os.environ, **(env or {})})


def reply_to(lm, messages, n=10) -> str:
    return generate(lm, lm.chat_prompt_ids(messages), GenerationSettings(max_tokens=n, temperature=0)).text


def test_conversation_with_commands_and_multiline_input(run_dir, lm):
    script = "\n".join([
        "/system You write product copy.",
        "Describe a \\",
        "steel bottle.",
        "/prompt",
        '"""',
        "Now shorter.",
        "",
        "Two lines.",
        '"""',
        "/reset",
        "/set max_tokens 4",
        "/set colour blue",
        "Hi",
        "/exit",
        "never read",
    ]) + "\n"
    done = chat(str(run_dir), "--temperature", "0", "--max-tokens", "10", stdin=script)
    assert done.returncode == 0, done.stderr
    system = {"role": "system", "content": "You write product copy."}
    first = {"role": "user", "content": "Describe a \nsteel bottle."}
    r1 = reply_to(lm, [system, first])
    convo1 = [system, first, {"role": "assistant", "content": r1}]
    second = {"role": "user", "content": "Now shorter.\n\nTwo lines."}
    r2 = reply_to(lm, convo1 + [second])
    r3 = reply_to(lm, [system, {"role": "user", "content": "Hi"}], n=4)
    # the exact saved template renders what the model saw
    shown = lm.tokenizer.apply_chat_template(convo1, tokenize=False)
    assert done.stdout == f"{r1}\n{shown}\n{r2}\n{r3}\n"
    assert "<|start_header_id|>system<|end_header_id|>" in shown
    assert "conversation cleared" in done.stderr and "max_tokens = 4" in done.stderr
    assert "error: /set takes one of" in done.stderr


def test_registry_target_and_bad_target(run_dir, lm, tmp_path):
    root = tmp_path / "registry"
    reg.register(root, "shop", run_dir)
    done = chat("shop@v1", "--registry", str(root), "--temperature", "0", "--max-tokens", "6", stdin="Hello\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == reply_to(lm, [{"role": "user", "content": "Hello"}], n=6) + "\n"
    done = chat("shop@v7", "--registry", str(root), stdin="")
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == "error: shop has no version v7 (versions: v1)"




def test_openai_target_through_our_own_endpoint(run_dir, lm, tmp_path):
    root = tmp_path / "registry"
    reg.register(root, "shop", run_dir)
    reg.promote(root, "shop", 1)
    with running(create_app("shop", root)) as url:
        env = {"OPENAI_API_KEY": "unused", "OPENAI_BASE_URL": url + "/v1"}
        done = chat("openai:shop", "--temperature", "0", "--max-tokens", "8", stdin="Hello\nAgain\n", env=env)
        # a registered OpenAI run: its record names the endpoint and the env var holding the key
        oai_run = tmp_path / "oai_run"
        (oai_run / "model").mkdir(parents=True)
        (oai_run / "model" / "openai_model.json").write_text(json.dumps(
            {"fine_tuned_model": "shop", "base_url": url + "/v1", "api_key_env": "SHOP_KEY"}))
        reg.register(root, "tuned", oai_run)
        registered = chat("tuned", "--registry", str(root), "--temperature", "0", "--max-tokens", "8",
                          stdin="Hello\n", env={"SHOP_KEY": "unused", "OPENAI_BASE_URL": ""})
        unknown = chat("openai:nope", stdin="hi\n/exit\n", env=env)
    assert unknown.returncode == 0 and "error: openai:nope: NotFoundError" in unknown.stderr  # REPL goes on
    assert done.returncode == 0, done.stderr
    r1 = reply_to(lm, [{"role": "user", "content": "Hello"}], n=8)
    r2 = reply_to(lm, [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": r1},
                       {"role": "user", "content": "Again"}], n=8)
    assert done.stdout == f"{r1}\n{r2}\n"
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout == f"{r1}\n"
    done = chat("openai:gpt-4o-mini", stdin="hi\n", env={"OPENAI_API_KEY": ""})
    assert done.returncode != 0 and "environment variable OPENAI_API_KEY is not set" in done.stderr
