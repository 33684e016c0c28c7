"""The OpenAI-compatible endpoint, driven by the real `openai` SDK over HTTP against uvicorn, with
responses validated against the official OpenAPI spec's schemas."""
import concurrent.futures as cf
import contextlib
import json
import math
import shutil
import threading
import time
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from webtune.deploy import registry as reg
from webtune.deploy.generate import GenerationSettings, generate, load_model, make_tiny_chat_model
from webtune.deploy.serve import ServeConfig, api_key_of, create_app
from webtune.errors import WebtuneError
from tests.fakes.asgi import running

SPEC = Path(__file__).resolve().parents[2] / "docs" / "contracts" / "openai-openapi.yaml"  # OpenAI's, as published


# ---------------------------------------------------------------- the spec's schemas
def _nullable_to_anyof(node):
    """The spec is OpenAPI 3.1 but a few schemas still use 3.0's `nullable: true`, which JSON
    Schema ignores; turn it into `anyOf: [schema, null]` so null is accepted where the spec means it."""
    if isinstance(node, list):
        return [_nullable_to_anyof(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable_to_anyof(v) for k, v in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


@pytest.fixture(scope="module")
def schema():
    spec = _nullable_to_anyof(yaml.load(SPEC.read_text(), Loader=yaml.CSafeLoader))
    # OpenAI returns null for the first echoed token's logprob (nothing precedes it), and so do we;
    # the spec's item type says number, so allow null there only.
    lp = spec["components"]["schemas"]["CreateCompletionResponse"]["properties"]["choices"]["items"][
        "properties"]["logprobs"]["anyOf"][0]["properties"]
    for key in ("token_logprobs", "top_logprobs"):
        lp[key]["items"] = {"anyOf": [lp[key]["items"], {"type": "null"}]}
    # Streamed completions use the same schema, whose finish_reason has no null; OpenAI (and vLLM)
    # send null in every chunk but the last, and so do we.
    fr = spec["components"]["schemas"]["CreateCompletionResponse"]["properties"]["choices"]["items"][
        "properties"]
    fr["finish_reason"] = {"anyOf": [fr["finish_reason"], {"type": "null"}]}
    registry = Registry().with_resource("urn:openai", Resource(spec, DRAFT202012))

    def validate(name: str, instance: dict) -> None:
        jsonschema.Draft202012Validator({"$ref": f"urn:openai#/components/schemas/{name}"},
                                        registry=registry).validate(instance)
    return validate


# ---------------------------------------------------------------- models, registry, server
@pytest.fixture(scope="module")
def registry_path(tmp_path_factory):
    """Registry `shop` with v1 and v2 (different random weights), v1 promoted."""
    root = tmp_path_factory.mktemp("serve")
    for seed in (0, 1):
        run = root / f"run{seed}"
        make_tiny_chat_model(run / "model", seed=seed)
        (run / "metrics.json").write_text(json.dumps({"eval": {"passed": True, "flags": []}}))
        (run / "config.yaml").write_text(f"name: shop\nseed: {seed}\n")
        reg.register(root / "registry", "shop", run)
    reg.promote(root / "registry", "shop", 1)
    return root / "registry"


@pytest.fixture(scope="module")
def local(registry_path):
    """The same models loaded directly, to compare the server's answers with."""
    return {v: load_model(registry_path / "shop" / f"v{v}" / "model") for v in (1, 2)}




@pytest.fixture(scope="module")
def base_url(registry_path):
    with running(app(registry_path, "shop", max_concurrency=2, queue_size=16)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


def app(registry, name, **config):
    return create_app(name, registry, ServeConfig(**config))


def greedy(lm, messages, n):
    return generate(lm, lm.chat_prompt_ids(messages), GenerationSettings(max_tokens=n, temperature=0))


def sse_events(base_url: str, path: str, body: dict) -> list:
    """Raw `data:` payloads of a streamed response, in order (JSON decoded, `[DONE]` kept as is)."""
    out = []
    with httpx.stream("POST", base_url + path, json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append("[DONE]" if line == "data: [DONE]" else json.loads(line[6:]))
    return out


MSGS = [{"role": "system", "content": "You write product copy."},
        {"role": "user", "content": "Describe a steel water bottle."}]


def long_stream(client, max_tokens: int, started: threading.Event) -> list:
    """A greedy streamed chat completion read to its end; `started` is set at its first chunk."""
    chunks = []
    for chunk in client.chat.completions.create(model="shop", messages=MSGS, max_tokens=max_tokens,
                                                temperature=0, stream=True):
        chunks.append(chunk)
        started.set()
    return chunks


# ---------------------------------------------------------------- tests
def test_models_and_health(client, base_url, schema):
    assert [m.id for m in client.models.list()] == ["shop", "shop@v1", "shop@v2"]  # each version by its own id
    body = httpx.get(base_url + "/v1/models").json()
    schema("ListModelsResponse", body)
    assert client.models.retrieve("shop").owned_by == "webtune"
    card = httpx.get(base_url + "/v1/models/shop").json()
    schema("Model", card)
    assert card == body["data"][0] and card["id"] == "shop"
    r = httpx.get(base_url + "/v1/models/gpt-4o")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    schema("ErrorResponse", r.json())
    health = httpx.get(base_url + "/health").json()
    assert (health["status"], health["model"], health["version"]) == ("ok", "shop", "v1")


def test_chat_completion_uses_the_saved_template(client, local, schema):
    raw = client.chat.completions.with_raw_response.create(model="shop", messages=MSGS, max_tokens=12,
                                                          temperature=0)
    schema("CreateChatCompletionResponse", raw.http_response.json())
    resp = raw.parse()
    expected = greedy(local[1], MSGS, 12)
    assert resp.choices[0].message.content == expected.text and expected.text
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.prompt_tokens == len(local[1].chat_prompt_ids(MSGS))
    assert resp.usage.completion_tokens == 12 and resp.system_fingerprint == "shop@v1"


def test_chat_stream(client, base_url, local, schema):
    events = sse_events(base_url, "/v1/chat/completions", {
        "model": "shop", "messages": MSGS, "max_tokens": 12, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for c in chunks:
        schema("CreateChatCompletionStreamResponse", c)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == greedy(local[1], MSGS, 12).text
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    assert [i for i, c in enumerate(chunks) if "usage" in c] == [len(chunks) - 1]  # only the last has usage
    assert [i for i, c in enumerate(chunks) if c["choices"] and "role" in c["choices"][0]["delta"]] == [0]
    assert len({(c["id"], c["created"], c["system_fingerprint"]) for c in chunks}) == 1
    # and the SDK reads the same stream
    sdk = client.chat.completions.create(model="shop", messages=MSGS, max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in sdk if c.choices) == text


def test_sampling_seed_n_and_stop(client, local):
    def sample(seed):
        r = client.chat.completions.create(model="shop", messages=MSGS, max_tokens=10, temperature=1.0,
                                           top_p=0.9, n=3, seed=seed)
        return [c.message.content for c in r.choices]
    a, b, c = sample(7), sample(7), sample(8)
    assert len(a) == 3 and a == b and a != c and len(set(a)) > 1
    with cf.ThreadPoolExecutor(4) as ex:  # each request samples with its own generator
        assert list(ex.map(lambda _: sample(7), range(4))) == [a] * 4
    chunks = list(client.chat.completions.create(model="shop", messages=MSGS, max_tokens=10, temperature=1.0,
                                                 top_p=0.9, n=3, seed=7, stream=True))
    streamed = ["".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices[0].index == i)
                for i in range(3)]
    assert streamed == a
    assert [ch.choices[0].index for ch in chunks if ch.choices[0].finish_reason] == [0, 1, 2]
    full = greedy(local[1], MSGS, 20).text
    stop = full[8:11]
    for stream in (False, True):
        r = client.chat.completions.create(model="shop", messages=MSGS, max_tokens=20, temperature=0,
                                           stop=[stop, "never-seen"], stream=stream)
        if stream:
            chunks = list(r)
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            text, finish = r.choices[0].message.content, r.choices[0].finish_reason
        assert text == full[:full.index(stop)] and finish == "stop"


def test_completions_echo_logprobs_for_loglikelihood(client, local, schema):
    import torch
    lm = local[1]
    raw = client.completions.with_raw_response.create(model="shop", prompt="Wireless headphones with noise",
                                                      max_tokens=0, echo=True, logprobs=1, temperature=0)
    schema("CreateCompletionResponse", raw.http_response.json())
    choice = raw.parse().choices[0]
    ids = lm.encode("Wireless headphones with noise")
    assert choice.text == "Wireless headphones with noise"
    assert len(choice.logprobs.tokens) == len(ids) and choice.logprobs.token_logprobs[0] is None
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    expected = sum(float(logp[i - 1, ids[i]]) for i in range(1, len(ids)))
    assert math.isclose(sum(choice.logprobs.token_logprobs[1:]), expected, rel_tol=1e-4)
    # lm-evaluation-harness's local-completions shape: token ids in a batch, one new token, echo
    batch = [ids, lm.encode("Stainless steel")]
    resp = client.completions.create(model="shop", prompt=batch, max_tokens=1, echo=True, logprobs=1,
                                     temperature=0, seed=1234)
    assert [c.index for c in resp.choices] == [0, 1]
    for c, p in zip(resp.choices, batch):
        assert len(c.logprobs.token_logprobs) == len(p) + 1
        greedy_token = c.logprobs.token_logprobs[-1]
        assert greedy_token == max(c.logprobs.top_logprobs[-1].values())  # temperature 0: it is greedy
    assert resp.usage.prompt_tokens == len(batch[0]) + len(batch[1]) and resp.usage.completion_tokens == 2


def test_completions_plain_and_stream(client, base_url, local, schema):
    lm = local[1]
    ids = lm.encode("Hello")
    expected = generate(lm, ids, GenerationSettings(max_tokens=8, temperature=0)).text
    r = client.completions.with_raw_response.create(model="shop", prompt="Hello", max_tokens=8, temperature=0)
    schema("CreateCompletionResponse", r.http_response.json())
    assert r.parse().choices[0].text == expected
    events = sse_events(base_url, "/v1/completions", {"model": "shop", "prompt": "Hello", "max_tokens": 8,
                                                      "temperature": 0, "stream": True})
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        schema("CreateCompletionResponse", e)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == expected


CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


BAD_CHAT = [  # (body, status, the error's param, in its message)
    ({"model": "shop"}, 400, "messages", "Field required"),
    ({"model": "shop", "messages": []}, 400, "messages", "at least 1"),
    ({"model": "shop", "messages": MSGS, "foo": 1}, 400, "foo", "Unrecognized request argument supplied: foo"),
    ({"model": "shop", "messages": MSGS, "temperature": 5}, 400, "temperature", "less than or equal to 2"),
    ({"model": "shop", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role", "'user'"),
    ({"model": "shop", "messages": MSGS, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4"),
    ({"model": "shop", "messages": MSGS, "presence_penalty": 1}, 400, "presence_penalty", "not supported"),
    ({"model": "shop", "messages": MSGS, "frequency_penalty": -1}, 400, "frequency_penalty", "not supported"),
    ({"model": "shop", "messages": MSGS, "logit_bias": {"5": 1}}, 400, "logit_bias", "not supported"),
    ({"model": "shop", "messages": MSGS, "logprobs": True}, 400, "logprobs", "use /v1/completions"),
    ({"model": "shop", "messages": MSGS, "stream": "maybe"}, 400, "stream", "valid boolean"),
    ({"model": "shop", "messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content", "valid"),
    ({"model": "gpt-4o", "messages": MSGS}, 404, "model", "does not exist"),
    ({"model": "shop", "messages": MSGS, "max_tokens": 100000}, 400, "max_tokens", "more than this server allows"),
    ({"model": "shop", "messages": MSGS, "max_tokens": 500}, 400, "messages", "maximum context length is 512"),
    ({"model": "shop", "messages": [{"role": "user", "content": "x" * 2000}]}, 400, "messages",
     "maximum context length is 512"),
]
BAD_COMPLETIONS = [
    ({"model": "shop", "prompt": "x", "suffix": "y"}, 400, "suffix", "not supported"),
    ({"model": "shop", "prompt": "x", "best_of": 2}, 400, "best_of", "less than or equal to 1"),
    ({"model": "shop", "prompt": "x", "logprobs": 1, "stream": True}, 400, "logprobs", "not supported"),
    ({"model": "shop", "prompt": []}, 400, "prompt", "prompt is empty"),
    ({"model": "shop", "prompt": [[1, 2], []]}, 400, "prompt", "prompt 1 is empty"),
    ({"model": "shop", "prompt": "x", "presence_penalty": 0.5}, 400, "presence_penalty", "not supported"),
    ({"model": "gpt-4o", "prompt": "x"}, 404, "model", "does not exist"),
    ({"model": "shop", "prompt": "x", "max_tokens": 513}, 400, "max_tokens", "more than this server allows"),
    ({"model": "shop", "prompt": ["x", "y" * 2000]}, 400, "prompt", "maximum context length is 512"),
]


@pytest.mark.parametrize("path, body, status, param, needle",
                         [(CHAT, *case) for case in BAD_CHAT] + [(COMPLETIONS, *case) for case in BAD_COMPLETIONS])
def test_bad_requests_get_openai_errors(base_url, schema, path, body, status, param, needle):
    r = httpx.post(base_url + path, json=body)
    assert r.status_code == status, r.text
    schema("ErrorResponse", r.json())
    err = r.json()["error"]
    assert err["param"] == param and needle in err["message"]
    assert httpx.get(base_url + "/health").json()["admitted"] == 0  # a refused request holds no place


def test_bad_shapes_elsewhere(base_url, client, schema):
    r = httpx.post(base_url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(base_url + "/v1/completions", json={"model": "shop", "prompt": [[1, 2, 99999]]})
    assert r.status_code == 400 and "outside the vocabulary" in r.json()["error"]["message"]
    r = httpx.get(base_url + "/v1/nothing-here")
    assert r.status_code == 404
    schema("ErrorResponse", r.json())
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="shop", prompt="x" * 2000, max_tokens=5)
    assert httpx.get(base_url + "/health").json()["admitted"] == 0  # no place in the gate leaked


def test_bearer_key(registry_path, monkeypatch, schema):
    monkeypatch.setenv("WEBTUNE_TEST_SERVE_KEY", "s3cret")
    with running(app(registry_path, "shop", api_key_env="WEBTUNE_TEST_SERVE_KEY")) as url:
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        r = httpx.get(url + "/v1/models")
        assert r.status_code == 401
        schema("ErrorResponse", r.json())
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.post(url + "/v1/completions", json={"model": "shop", "prompt": "x"},
                       headers={"Authorization": "s3cret"})  # the key without `Bearer `
        assert r.status_code == 401
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model="shop", messages=MSGS, max_tokens=2).choices
        assert httpx.get(url + "/health").status_code == 200  # health needs no key
    monkeypatch.delenv("WEBTUNE_TEST_SERVE_KEY")
    with pytest.raises(WebtuneError, match="WEBTUNE_TEST_SERVE_KEY.*not set"):
        app(registry_path, "shop", api_key_env="WEBTUNE_TEST_SERVE_KEY")


def test_beyond_the_queue_gets_429_never_a_crash(registry_path, schema):
    with running(app(registry_path, "shop", max_concurrency=1, queue_size=1)) as url:
        body = {"model": "shop", "messages": MSGS, "max_tokens": 450, "temperature": 0, "stream": True}
        with contextlib.ExitStack() as stack:
            # one request generating, one queued: both admitted and still streaming
            streams = [stack.enter_context(httpx.stream("POST", url + "/v1/chat/completions", json=body,
                                                        timeout=120)) for _ in range(2)]
            lines = [s.iter_lines() for s in streams]
            for it in lines:
                assert next(it).startswith("data: ")
            with cf.ThreadPoolExecutor(4) as ex:
                extra = list(ex.map(lambda _: httpx.post(url + "/v1/chat/completions", json={
                    **body, "stream": False, "max_tokens": 2}, timeout=60), range(4)))
            for r in extra:
                assert r.status_code == 429
                schema("ErrorResponse", r.json())
                assert r.json()["error"]["code"] == "rate_limit_exceeded"
            for it in lines:  # the admitted ones finish normally
                assert [line for line in it if line.startswith("data: ")][-1] == "data: [DONE]"
        health = httpx.get(url + "/health").json()
        assert (health["version"], health["admitted"]) == ("v1", 0)
        r = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
        assert r.status_code == 200  # and the server takes work again


def test_client_leaving_mid_stream_frees_its_slot(base_url):
    body = {"model": "shop", "messages": MSGS, "max_tokens": 400, "temperature": 0, "stream": True}
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert httpx.get(base_url + "/health").json()["admitted"] == 1
    deadline = time.time() + 20
    while httpx.get(base_url + "/health").json()["admitted"] and time.time() < deadline:
        time.sleep(0.05)
    assert httpx.get(base_url + "/health").json()["admitted"] == 0


def test_promote_and_rollback_while_streaming(registry_path, local, base_url, client):
    expected = {v: greedy(local[v], MSGS, 6).text for v in (1, 2)}
    assert expected[1] != expected[2]

    started = threading.Event()

    def ask():
        r = client.chat.completions.create(model="shop", messages=MSGS, max_tokens=6, temperature=0)
        return r.system_fingerprint, r.choices[0].message.content

    try:
        for target, change in ((2, lambda: reg.promote(registry_path, "shop", 2)),
                               (1, lambda: reg.rollback(registry_path, "shop"))):
            with cf.ThreadPoolExecutor(3) as ex:
                started.clear()
                stream = ex.submit(long_stream, client, 450, started)
                assert started.wait(60)  # the stream is under way
                side = [ex.submit(ask) for _ in range(2)]
                change()
                assert not stream.done()  # the switch happened mid-stream
                after = ask()  # the first request after the switch
                chunks = stream.result(timeout=120)
                side = [f.result(timeout=60) for f in side]  # none failed
            assert after == (f"shop@v{target}", expected[target])
            old = 3 - target
            assert {c.system_fingerprint for c in chunks} == {f"shop@v{old}"}  # finished on its model
            assert chunks[-1].choices[0].finish_reason == "length"
            assert all(fp in ("shop@v1", "shop@v2") for fp, _ in side)
    finally:
        reg.promote(registry_path, "shop", 1)


def test_startup_errors(tmp_path, registry_path):
    empty = tmp_path / "r"
    run = tmp_path / "run"
    shutil.copytree(registry_path / "shop" / "v1" / "model", run / "model")
    reg.register(empty, "shop", run)
    with pytest.raises(WebtuneError, match="no promoted version"):
        app(empty, "shop")
    with pytest.raises(WebtuneError, match="no model 'other'"):
        app(empty, "other")
    with pytest.raises(WebtuneError, match="has no version v7"):
        app(empty, "shop@v7")
    with pytest.raises(WebtuneError, match="neither a directory nor NAME"):
        app(empty, "not a name/")


def test_the_saved_chat_template_is_the_one_applied(tmp_path, registry_path, schema):
    run = tmp_path / "run"
    shutil.copytree(registry_path / "shop" / "v1" / "model", run / "model")
    (run / "model" / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System messages are not supported') }}{% endif %}"
        "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] ")
    reg.register(tmp_path / "r", "strict", run)
    reg.promote(tmp_path / "r", "strict", 1, force=True)
    with running(app(tmp_path / "r", "strict")) as url:
        r = httpx.post(url + "/v1/chat/completions", json={"model": "strict", "messages": MSGS})
        assert r.status_code == 400 and "System messages are not supported" in r.json()["error"]["message"]
        schema("ErrorResponse", r.json())
        r = httpx.post(url + "/v1/chat/completions", json={"model": "strict", "max_tokens": 3,
                                                            "messages": MSGS[1:]}).json()
        lm = load_model(run / "model")
        rendered = "[user] " + MSGS[1]["content"] + "\n[assistant] "  # no BOS: the template has none
        assert r["usage"]["prompt_tokens"] == len(lm.tokenizer(rendered, add_special_tokens=False)["input_ids"])


def test_serves_a_lora_adapter_run(tmp_path, registry_path, local):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = registry_path / "shop" / "v1" / "model"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    run = tmp_path / "run"
    model.save_pretrained(run / "model")  # adapter only, no tokenizer: it comes from the base
    assert not (run / "model" / "config.json").exists()
    reg.register(tmp_path / "r", "lora", run)
    reg.promote(tmp_path / "r", "lora", 1, force=True)
    with running(app(tmp_path / "r", "lora")) as url:
        r = httpx.post(url + "/v1/chat/completions", json={"model": "lora", "messages": MSGS, "max_tokens": 8,
                                                            "temperature": 0}).json()
    adapted = load_model(run / "model")
    assert r["choices"][0]["message"]["content"] == greedy(adapted, MSGS, 8).text
    assert greedy(adapted, MSGS, 8).text != greedy(local[1], MSGS, 8).text  # the adapter is applied
    assert r["usage"]["prompt_tokens"] == len(local[1].chat_prompt_ids(MSGS))


# ---------------------------------------------------------------- safe limits
def test_a_request_without_max_tokens_stops_at_the_server_default(registry_path, local):
    want = greedy(local[1], MSGS, 7)
    assert want.completion_tokens == 7 and want.finish_reason == "length"  # the model would go on
    with running(app(registry_path, "shop@v1", max_tokens=7)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="shop", messages=MSGS, temperature=0)
        assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (7, "length")
        assert r.choices[0].message.content == want.text
        chunks = list(client.chat.completions.create(model="shop", messages=MSGS, temperature=0, stream=True,
                                                     stream_options={"include_usage": True}))
        assert chunks[-1].usage.completion_tokens == 7
        assert client.completions.create(model="shop", prompt="Hello", temperature=0).usage.completion_tokens == 7
        with pytest.raises(openai.BadRequestError, match="more than this server allows") as err:
            client.chat.completions.create(model="shop", messages=MSGS, max_tokens=8)
        assert err.value.body["param"] == "max_tokens"


@pytest.mark.parametrize("free_before_load,peak", [(True, 1), (False, 2)])
def test_a_swap_holds_two_models_only_when_allowed(tmp_path, registry_path, local, free_before_load, peak):
    registry = tmp_path / "r"
    shutil.copytree(registry_path, registry)
    reg.promote(registry, "shop", 1)
    with running(app(registry, "shop", free_before_load=free_before_load)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        started = threading.Event()
        with cf.ThreadPoolExecutor(2) as ex:
            stream = ex.submit(long_stream, client, 300, started)
            assert started.wait(60)
            reg.promote(registry, "shop", 2)
            after = client.chat.completions.create(model="shop", messages=MSGS, max_tokens=6, temperature=0)
            chunks = stream.result(timeout=120)
        assert {c.system_fingerprint for c in chunks} == {"shop@v1"}  # finished on the old version
        assert chunks[-1].choices[0].finish_reason == "length"
        assert after.system_fingerprint == "shop@v2"
        assert after.choices[0].message.content == greedy(local[2], MSGS, 6).text
        health = httpx.get(url + "/health").json()
        assert health["peak_resident_models"] == peak


def test_a_network_host_needs_a_key_or_no_auth(registry_path, monkeypatch):
    with pytest.raises(WebtuneError, match="--host 0.0.0.0 would serve to the network without an API key"):
        app(registry_path, "shop", host="0.0.0.0")
    with pytest.raises(WebtuneError, match="--host 10.0.0.7 would serve"):
        app(registry_path, "shop", host="10.0.0.7")
    monkeypatch.setenv("WEBTUNE_TEST_SERVE_KEY", "s3cret")
    # (the apps run on 127.0.0.1 here: only the checks of the configured host are under test)
    for config, status in (({"no_auth": True}, 200), ({"api_key_env": "WEBTUNE_TEST_SERVE_KEY"}, 401)):
        with running(app(registry_path, "shop", host="0.0.0.0", **config)) as url:
            assert httpx.get(url + "/v1/models").status_code == status
    for host in ("localhost", "127.0.0.2", "::1"):  # loopback: no key needed
        assert api_key_of(ServeConfig(host=host)) is None
    with pytest.raises(WebtuneError, match="--host example.com would serve"):
        api_key_of(ServeConfig(host="example.com"))


@pytest.mark.parametrize("log_prompts", [False, True])
def test_request_logs_carry_prompt_text_only_when_asked(registry_path, log_prompts):
    import logging

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("uvicorn.error")
    with running(app(registry_path, "shop@v1", log_prompts=log_prompts)) as url:
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.INFO)
        try:
            r = httpx.post(url + "/v1/chat/completions", json={"model": "shop", "messages": MSGS, "max_tokens": 3})
            assert r.status_code == 200
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
    request_lines = [line for line in lines if line.startswith("chat ")]
    assert len(request_lines) == 1 and "prompt_tokens=" in request_lines[0] and "completion_tokens=3" in request_lines[0]
    assert " shop@v1 " in request_lines[0] and " finish=length " in request_lines[0]
    assert ("steel water bottle" in request_lines[0]) is log_prompts
    assert ("You write product copy" in " ".join(lines)) is log_prompts  # nor in any other line


def test_serves_a_run_directory_without_a_registry(tmp_path, registry_path, local):
    run = tmp_path / "2026-12-01_10-00-00_shop"
    shutil.copytree(registry_path / "shop" / "v2" / "model", run / "model")
    with running(create_app(str(run), tmp_path / "no-registry")) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == [run.name]
        r = client.chat.completions.create(model=run.name, messages=MSGS, max_tokens=6, temperature=0)
    assert r.system_fingerprint == f"{run.name}@run"
    assert r.choices[0].message.content == greedy(local[2], MSGS, 6).text


def test_concurrent_requests_decode_together_and_match_one_at_a_time(base_url, client, local):
    prompts = [[{"role": "user", "content": "word " * k}] for k in range(1, 7)]
    want = [greedy(local[1], p, 12 + k).text for k, p in enumerate(prompts)]
    seeded = [generate(local[1], local[1].chat_prompt_ids(p), GenerationSettings(max_tokens=12, temperature=0.8,
                                                                                 seed=k)).text
              for k, p in enumerate(prompts)]

    def ask(k):
        g = client.chat.completions.create(model="shop", messages=prompts[k], max_tokens=12 + k, temperature=0)
        s = client.chat.completions.create(model="shop", messages=prompts[k], max_tokens=12, temperature=0.8, seed=k)
        return g.choices[0].message.content, s.choices[0].message.content

    with cf.ThreadPoolExecutor(6) as ex:
        got = list(ex.map(ask, range(6)))
    assert [g for g, _ in got] == want
    assert [s for _, s in got] == seeded


# ---------------------------------------------------------------- the engine behind its interface
class FailingEngine:
    """An engine (serve_engine.Engine) whose every sequence sends one piece and then fails, as
    BatchEngine reports a decode step that raised: the exception in place of the Generation."""

    def __init__(self, lm):
        self.submitted, self.cancelled, self.closed = 0, 0, False

    def submit(self, prompt_ids, settings, max_new, emit, group=None):
        self.submitted += 1
        emit("partial", None)
        emit("", RuntimeError("decode step failed"))
        return self

    def cancel(self):
        self.cancelled += 1

    def close(self):
        self.closed = True


def test_an_engine_failure_is_an_openai_error_and_frees_the_slot(registry_path, schema):
    engines = []
    make = lambda lm: engines.append(FailingEngine(lm)) or engines[-1]  # noqa: E731
    with running(create_app("shop", registry_path, ServeConfig(), make_engine=make)) as url:
        r = httpx.post(url + "/v1/chat/completions", json={"model": "shop", "messages": MSGS, "n": 2})
        assert r.status_code == 500 and r.json()["error"]["message"] == "internal error: RuntimeError"
        schema("ErrorResponse", r.json())
        events = sse_events(url, "/v1/chat/completions", {"model": "shop", "messages": MSGS, "stream": True})
        assert [e["choices"][0]["delta"] for e in events[:2]] == [{"role": "assistant", "content": ""},
                                                                  {"content": "partial"}]
        assert events[2:] == [{"error": {"message": "generation failed: RuntimeError", "type": "server_error",
                                         "param": None, "code": None}}]  # in-band, and no [DONE]
        assert httpx.get(url + "/health").json()["admitted"] == 0
    (engine,) = engines
    assert (engine.submitted, engine.cancelled, engine.closed) == (3, 3, True)  # every sequence cancelled
