"""The system prompt a run trained with is the one served: a request without a system message is
rendered under it (not the chat template's own default), `--system` overrides it, a request's own
system message wins, and the Ollama Modelfile carries it."""
import json
import logging
import shutil

import httpx
import pytest

from tests.conftest import FIXTURES
from tests.fakes.asgi import running
from webtune.deploy.export import Source, export
from webtune.deploy.generate import load_model
from webtune.deploy.modelfile import modelfile
from webtune.deploy.serve import ServeConfig, create_app
from webtune.deploy.system_prompt import trained_system_prompts

TRAINED = "You are the shop's product copywriter."
OTHER = "You write Reddit posts."
USER = [{"role": "user", "content": "Describe a steel water bottle."}]
# SmolLM2's template: ChatML that adds its own default system message to a conversation without one
SMOL_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                 "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run whose model has SmolLM2's template and whose training split used TRAINED (and OTHER)."""
    run = tmp_path_factory.mktemp("system") / "run"
    shutil.copytree(FIXTURES / "tiny_model", run / "model")
    (run / "model" / "chat_template.jinja").write_text(SMOL_TEMPLATE)
    (run / "data").mkdir()
    rows = [[{"role": "system", "content": TRAINED}, *USER, {"role": "assistant", "content": "Steel."}]] * 3
    rows += [[{"role": "system", "content": OTHER}, *USER, {"role": "assistant", "content": "Post."}]]
    (run / "data" / "train.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    return run


def rendered(base_url, messages) -> str:
    """The prompt the server rendered, from its request log (`--log-prompts`)."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        r = httpx.post(base_url + "/v1/chat/completions", json={"model": "run", "messages": messages,
                                                                 "max_tokens": 1, "temperature": 0})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert r.status_code == 200, r.text
    (line,) = [line for line in lines if line.startswith("chat ")]
    return json.loads(line.split(" prompt=", 1)[1])[0]


def test_a_request_without_a_system_message_gets_the_trained_one(run):
    assert trained_system_prompts(run / "model") == [TRAINED, OTHER]
    tok = load_model(run / "model").tokenizer
    def template(messages):
        return tok.decode(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False), skip_special_tokens=True)
    with running(create_app(run, config=ServeConfig(log_prompts=True))) as url:
        assert rendered(url, USER) == template([{"role": "system", "content": TRAINED}, *USER])
        mine = [{"role": "system", "content": "Be brief."}, *USER]
        assert rendered(url, mine) == template(mine)
    with running(create_app(run, config=ServeConfig(log_prompts=True, system=OTHER))) as url:
        assert rendered(url, USER) == template([{"role": "system", "content": OTHER}, *USER])
    assert "SmolLM" in template(USER)  # what leaked before: the template's own default


def test_the_modelfile_and_a_merged_export_carry_the_trained_prompt(run, tmp_path):
    lm = load_model(run / "model")
    text = modelfile(lm.tokenizer, lm.eos_ids, "x.gguf", False, run, lm.default_system)
    assert f'SYSTEM """{TRAINED}"""' in text and "SmolLM" not in text
    out = export(Source.parse(str(run), tmp_path),
                 "merged", None, False, tmp_path / "merged")
    assert trained_system_prompts(out) == [TRAINED, OTHER]
    assert load_model(out).default_system == TRAINED
