"""The Ollama Modelfile `webtune export --ollama` writes: its TEMPLATE, rendered by Go's own
text/template (the `go-template` package: Go's library compiled into a shared object), equals what
the run's Jinja chat template renders, for the tiny fixture (Llama 3 layout, llama.cpp adds BOS) and
for the default's SmolLM2 (ChatML with a default system prompt when none is given, no BOS added)."""
import json
import re
import subprocess
import sys

import pytest
import yaml
from transformers import AutoTokenizer

from tests.conftest import FIXTURES
from webtune import base_model
from webtune.deploy.modelfile import jinja_renderer, modelfile
from webtune.errors import WebtuneError

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}],
    [{"role": "user", "content": "Two lines:\nfirst\nsecond"}, {"role": "assistant", "content": "OK: first, second."},
     {"role": "user", "content": "And a quote \" and {braces}?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a refund?"},
     {"role": "assistant", "content": "Money back."}, {"role": "user", "content": "When?"}],
]


def go_render(template: str, messages: list[dict], tmp_path) -> str:
    """Render `template` with Go's text/template over Ollama's shape ({Messages: [{Role, Content}]}).
    In a child process: the library aborts its process on a template error."""
    pytest.importorskip("go_template", reason="needs go-template==0.0.3 (Go's text/template; dev extra)")
    (tmp_path / "t.tmpl").write_text(template)
    values = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    (tmp_path / "v.yml").write_text(yaml.safe_dump(values, allow_unicode=True))
    out = tmp_path / "out.txt"
    out.unlink(missing_ok=True)
    code = "import sys, go_template; go_template.render_template(*sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.tmpl"), str(tmp_path / "v.yml"), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return out.read_text()


def parse(text: str) -> dict:
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    return {"template": template, "system": system.group(1) if system else None,
            "stops": re.findall(r'^PARAMETER stop "(.*)"$', text, re.M), "from": re.findall(r"^FROM (.*)$", text, re.M)}


@pytest.mark.parametrize("model,add_bos,stop,system", [
    ("tiny", True, "<|eot_id|>", None),
    ("smollm2", False, "<|im_end|>", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
])
def test_the_template_renders_like_the_jinja_template_in_go(model, add_bos, stop, system, tmp_path):
    path = FIXTURES / "tiny_model" if model == "tiny" else base_model.resolve(base_model.DEFAULT)
    tok = AutoTokenizer.from_pretrained(path)
    eos = [tok.eos_token_id]
    got = parse(modelfile(tok, eos, "m-f16.gguf", add_bos, path))
    assert got["from"] == ["./m-f16.gguf"] and stop in got["stops"] and got["system"] == system
    jinja = jinja_renderer(tok, add_bos)
    for conversation in CONVERSATIONS:
        want = jinja(conversation)
        assert go_render(got["template"], conversation, tmp_path) == want, json.dumps(conversation)
    if add_bos:  # what llama.cpp reads: BOS, then the rendered TEMPLATE = the Jinja text
        assert tok.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True) == (
            tok.bos_token + jinja(CONVERSATIONS[0]))
    if system:  # the default system message appears exactly when the conversation has none
        assert system in go_render(got["template"], CONVERSATIONS[0], tmp_path)
        assert system not in go_render(got["template"], CONVERSATIONS[1], tmp_path)


def test_a_template_no_layout_renders_is_refused_in_one_line(tmp_path):
    tok = AutoTokenizer.from_pretrained(FIXTURES / "tiny_model")
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
    with pytest.raises(WebtuneError, match="--ollama: the chat template is not one of the layouts") as err:
        modelfile(tok, [tok.eos_token_id], "m.gguf", True, tmp_path / "model")
    assert "\n" not in str(err.value) and str(tmp_path / "model") in str(err.value)


def test_a_chatml_template_whose_default_is_not_a_system_turn_is_refused(tmp_path):
    tok = AutoTokenizer.from_pretrained(FIXTURES / "tiny_model")
    # ChatML, but without a system message it prepends a user turn: no Modelfile can say that here
    tok.chat_template = ("{% if messages[0]['role'] != 'system' %}<|im_start|>user\nHi<|im_end|>\n{% endif %}"
                         "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(WebtuneError, match="--ollama"):
        modelfile(tok, [tok.eos_token_id], "m.gguf", False, tmp_path)
