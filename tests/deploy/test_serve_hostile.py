"""`webtune serve` against hostile and greedy clients (issue 26), over real HTTP on 127.0.0.1: a body
over the limit is a 413 before parsing (declared or chunked), a text that cannot fit the context
is a 400 before tokenising, too many messages or sequences (prompts x n) are a 400, a full gate is
a 429 and a missing model a 503, both with Retry-After, every ill-typed or out-of-range number
(a seed past int64 first) is a 400 naming the field, never a 500 or a dropped stream; and in the
engine, a small request queued behind a large one finishes within a number of decode steps that
does not grow with the large one."""
import json
import shutil
import time

import httpx
import pytest

from tests.conftest import FIXTURES
from tests.fakes.asgi import running
from webtune.deploy import registry as reg
from webtune.deploy.batching import BatchEngine
from webtune.deploy.generate import Generation, GenerationSettings, load_model
from webtune.deploy.openai_api import MAX_MESSAGES
from webtune.deploy.serve import ServeConfig, create_app

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
MSGS = [{"role": "user", "content": "Describe a steel water bottle."}]
BODY_LIMIT = 2 ** 20


@pytest.fixture(scope="module")
def registry_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    run = root / "run"
    shutil.copytree(FIXTURES / "tiny_model", run / "model")
    (run / "metrics.json").write_text(json.dumps({"eval": {"passed": True, "flags": []}}))
    (run / "config.yaml").write_text("name: shop\n")
    reg.register(root / "registry", "shop", run)
    reg.promote(root / "registry", "shop", 1)
    return root / "registry"


def app(registry, make_engine=None, **config):
    return create_app("shop", registry, ServeConfig(**config), make_engine=make_engine)


class HoldingEngine:
    """An engine (serve_engine.Engine) whose sequences send one piece, then hold their place until
    cancelled (a client that leaves): a request keeps its sequences in the gate as long as needed."""

    def __init__(self, lm):
        self.held = []

    def submit(self, prompt_ids, settings, max_new, emit, group=None):
        emit("x", None)
        self.held.append((emit, group))
        return Held(emit, len(prompt_ids))

    def close(self):
        pass


class Held:
    def __init__(self, emit, prompt_tokens):
        self.emit, self.prompt_tokens = emit, prompt_tokens

    def cancel(self):
        self.emit("", Generation("x", [1], "stop", self.prompt_tokens))


@pytest.fixture(scope="module")
def url(registry_path):
    with running(app(registry_path, max_concurrency=2, queue_size=4, max_request_sequences=4,
                     max_body_bytes=BODY_LIMIT)) as base:
        yield base


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


def test_a_body_over_the_limit_is_a_413_before_parsing(url):
    big = json.dumps({"model": "shop", "messages": [{"role": "user", "content": "x" * (2 * BODY_LIMIT)}]}).encode()
    err = error_of(httpx.post(url + CHAT, content=big, headers={"content-type": "application/json"}), 413)
    assert err["code"] == "request_too_large" and f"over {BODY_LIMIT} bytes" in err["message"]

    def chunked():  # no Content-Length: counted as it comes
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
    err = error_of(httpx.post(url + CHAT, content=chunked(), headers={"content-type": "application/json"}), 413)
    assert err["code"] == "request_too_large"
    not_json = b"{" * (BODY_LIMIT + 1)  # refused unparsed: a parser would have said 400
    assert httpx.post(url + COMPLETIONS, content=not_json).status_code == 413
    health = httpx.get(url + "/health").json()
    assert (health["status"], health["admitted"]) == ("ok", 0)
    r = httpx.post(url + CHAT, json={"model": "shop", "messages": MSGS, "max_tokens": 2})
    assert r.status_code == 200  # the same server takes work afterwards


def test_text_that_cannot_fit_is_refused_before_tokenising(url):
    err = error_of(httpx.post(url + CHAT, json={"model": "shop", "messages": [
        {"role": "user", "content": "steel " * 150_000}]}), 400)  # 900k characters, under the body limit
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert "900000 characters" in err["message"] and "maximum context length is 1024" in err["message"]
    err = error_of(httpx.post(url + COMPLETIONS, json={"model": "shop", "prompt": ["ok", "y" * 900_000]}), 400)
    assert err["param"] == "prompt" and "characters" in err["message"]


def test_too_many_messages_is_a_400(url):
    many = [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)
    err = error_of(httpx.post(url + CHAT, json={"model": "shop", "messages": many}), 400)
    assert err["param"] == "messages" and f"at most {MAX_MESSAGES}" in err["message"]


@pytest.mark.parametrize("body, param, needle", [
    ({"prompt": ["a", "b", "c", "d", "e"]}, "prompt", "5 prompt(s) x n=1 = 5 sequences"),
    ({"prompt": "a", "n": 5}, "n", "1 prompt(s) x n=5 = 5 sequences"),
    ({"prompt": [[1, 2], [3, 4], [5, 6]], "n": 2}, "prompt", "3 prompt(s) x n=2 = 6 sequences"),
])
def test_a_request_over_the_per_request_sequence_cap_is_a_400(url, body, param, needle):
    err = error_of(httpx.post(url + COMPLETIONS, json={"model": "shop", "max_tokens": 2, **body}), 400)
    assert (err["param"], err["code"]) == (param, "too_many_sequences")
    assert needle in err["message"] and "at most 4" in err["message"] and "--max-request-sequences" in err["message"]


def test_the_cap_itself_is_served(url):
    r = httpx.post(url + COMPLETIONS, json={"model": "shop", "prompt": ["a", "b"], "n": 2, "max_tokens": 2})
    assert r.status_code == 200 and len(r.json()["choices"]) == 4


def test_the_gate_counts_sequences_and_429_says_when_to_retry(registry_path):
    engines = []
    make = lambda lm: engines.append(HoldingEngine(lm)) or engines[-1]  # noqa: E731
    with running(app(registry_path, make, max_concurrency=2, queue_size=1, max_request_sequences=2)) as base:
        hold = {"model": "shop", "prompt": "hold", "n": 2, "max_tokens": 4, "stream": True}
        with httpx.stream("POST", base + COMPLETIONS, json=hold, timeout=60) as stream:
            lines = stream.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)  # admitted: 2 sequences of the gate's 3
            health = httpx.get(base + "/health").json()
            assert (health["admitted"], health["admitted_requests"]) == (2, 1)
            for path, body in ((COMPLETIONS, {"prompt": ["a", "b"]}), (CHAT, {"messages": MSGS, "n": 2}),
                               (CHAT, {"messages": MSGS, "n": 2, "stream": True})):
                r = httpx.post(base + path, json={"model": "shop", "max_tokens": 2, **body})
                assert error_of(r, 429)["code"] == "rate_limit_exceeded" and "needs 2" in r.json()["error"]["message"]
                assert int(r.headers["retry-after"]) >= 1
        (engine,) = engines
        assert [group for _, group in engine.held] == [engine.held[0][1]] * 2  # one request: one group
        deadline = time.monotonic() + 30
        while httpx.get(base + "/health").json()["admitted"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(base + "/health").json()["admitted"] == 0  # the client left: its sequences are free


def test_a_missing_model_is_a_503_with_retry_after(tmp_path, registry_path):
    registry = tmp_path / "registry"
    shutil.copytree(registry_path, registry)
    with running(app(registry)) as base:
        (registry / "shop" / "current.json").unlink()  # nothing promoted any more
        r = httpx.post(base + CHAT, json={"model": "shop", "messages": MSGS, "max_tokens": 2})
        assert error_of(r, 503)["type"] == "server_error" and "no promoted version" in r.json()["error"]["message"]
        assert int(r.headers["retry-after"]) >= 1


BAD_NUMBERS = [  # (extra body fields, the error's param)
    ({"seed": 2 ** 64}, "seed"),
    ({"seed": 2 ** 63}, "seed"),
    ({"seed": -2 ** 63 - 1}, "seed"),
    ({"seed": 10 ** 40}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"seed": 7.5}, "seed"),
    ({"seed": True}, "seed"),
    ({"n": "2"}, "n"),
    ({"n": 2.0}, "n"),
    ({"n": 10 ** 30}, "n"),
    ({"max_tokens": 10 ** 30}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"temperature": "0.5"}, "temperature"),
    ({"temperature": 10 ** 400}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": True}, "top_p"),
    ({"logprobs": 10 ** 20}, "logprobs"),
    ({"logprobs": "1"}, "logprobs"),
    ({"prompt": [[1, True]]}, "prompt"),
]


@pytest.mark.parametrize("extra, param, stream", [(*case, False) for case in BAD_NUMBERS] +
                         [({"seed": 2 ** 64}, "seed", True), ({"n": 2.0}, "n", True)])
def test_ill_typed_or_out_of_range_numbers_are_400s(url, extra, param, stream):
    """Each a 400 naming the field, a stream's too, before its headers (a seed past 2^64 used to
    fail inside the decode step: a 500, or a stream cut by an in-band error)."""
    body = {"model": "shop", "prompt": "x", "max_tokens": 2, "stream": stream, **extra}
    err = error_of(httpx.post(url + COMPLETIONS, json=body), 400)
    assert err["param"] == param
    assert err["message"].startswith(f"Invalid '{param}'") or "more than this server allows" in err["message"]


def test_non_finite_numbers_are_400s(url):
    for raw in ('{"model": "shop", "messages": [], "temperature": NaN}',
                '{"model": "shop", "prompt": "x", "top_p": Infinity}'):
        path = CHAT if "messages" in raw else COMPLETIONS
        assert httpx.post(url + path, content=raw, headers={"content-type": "application/json"}).status_code == 400
    err = error_of(httpx.post(url + CHAT, content=b'{"model": "shop"}'), 400)  # no Content-Type: not read as JSON
    assert "must be a JSON object" in err["message"]
    err = error_of(httpx.post(url + CHAT, json=[1, 2]), 400)
    assert "must be a JSON object" in err["message"]


def test_every_int64_seed_is_served(url):
    for seed in (2 ** 63 - 1, -2 ** 63, -1, 0):  # OpenAI's seed is an int64; n > 1 adds the choice index
        r = httpx.post(url + CHAT, json={"model": "shop", "messages": MSGS, "max_tokens": 2, "temperature": 1,
                                         "seed": seed, "n": 2})
        assert r.status_code == 200 and len(r.json()["choices"]) == 2, r.text


# ---------------------------------------------------------------- fairness, in decode steps
@pytest.fixture(scope="module")
def lm(registry_path):
    return load_model(registry_path / "shop" / "v1" / "model")


def finish_steps(lm, large: int, max_new: int) -> tuple[int, int]:
    """A request of `large` sequences, then a one-sequence request, on 2 rows: (decode steps the
    small one took from its submission to its end, steps until the large one's last ended)."""
    engine = BatchEngine(lm, max_batch=2, threads=1)
    ended, ids = {}, lm.encode("a steel bottle")
    settings = GenerationSettings(max_tokens=max_new, temperature=0)

    def on_end(key):
        return lambda piece, gen: ended.__setitem__(key, engine.steps) if gen is not None else None
    try:
        for i in range(large):
            engine.submit(ids, settings, max_new, on_end(i), group="large")
        submitted = engine.steps
        engine.submit(ids, settings, max_new, on_end("small"), group="small")
        engine.wait_idle()
    finally:
        engine.close()
    return ended.pop("small") - submitted, max(ended.values())


def test_a_small_request_behind_a_large_one_waits_a_bound_not_its_size(lm):
    max_new = 6
    small_4, large_4 = finish_steps(lm, 4, max_new)
    small_16, large_16 = finish_steps(lm, 16, max_new)
    # the next free row, then its own tokens: at most 2 x max_new steps, with 4 or 16 before it
    assert small_4 <= 2 * max_new and small_16 <= 2 * max_new
    # first come, first served would have made it wait for all 16: 8 rounds of max_new - 1 steps
    assert large_16 >= 8 * (max_new - 1) > 2 * max_new
    assert large_4 < large_16  # and the large requests still finish
