"""The loss mask on real chat templates: `{% generation %}` markers whatever their whitespace control,
and the prefix-render fallback (for templates without markers, like SmolLM2's ChatML) checked token by
token against the marker mask of each shipped family template with its markers stripped."""
from __future__ import annotations

import re

import pytest

from tests.train.test_families import CONVERSATION, FAMILIES, tiny_tokenizer
from webtune.errors import WebtuneError
from webtune.chat.tokenize import IGNORE, ChatTokenizer
from webtune.paths import SHIPPED

MARKER = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")
FAMILY_TEMPLATES = {"gemma3_1b": "gemma3.j2", "llama31_8b": "llama31.j2", "mistral7b": "mistral.j2",
                    "falcon3_7b": "falcon3.j2"}
# Two exchanges without a system prompt, and one exchange with one (Mistral moves a system prompt to
# the last user turn, so a multi-turn chat with one is not prefix-renderable: tested below).
CHATS = [CONVERSATION[1:], CONVERSATION[:3]]


def family_tokenizer(family: str, template: str):
    spec = FAMILIES[family]
    tok = tiny_tokenizer(spec["bos"], spec["eos"], spec["pad"], spec["extra"])
    tok.chat_template = template
    tok.eos_token = spec["end_of_turn"]
    return tok


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct's own tokenizer and ChatML template (no generation markers)."""
    from transformers import AutoTokenizer
    from webtune import base_model
    return AutoTokenizer.from_pretrained(base_model.resolve(base_model.DEFAULT))


def trained_text(chat: ChatTokenizer, messages) -> str:
    ids, labels = chat.encode(messages)
    return chat.tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])


@pytest.mark.parametrize("family", list(FAMILY_TEMPLATES))
def test_fallback_mask_equals_the_marker_mask_token_by_token(family):
    with_markers = (SHIPPED / "templates/chat" / FAMILY_TEMPLATES[family]).read_text()
    stripped = MARKER.sub("", with_markers)
    assert stripped != with_markers and not MARKER.search(stripped)
    marked = ChatTokenizer(family_tokenizer(family, with_markers), family)
    fallback = ChatTokenizer(family_tokenizer(family, stripped), family)
    assert marked.has_markers and not fallback.has_markers
    for messages in CHATS:
        assert fallback.tok.apply_chat_template(messages, tokenize=False) == \
            marked.tok.apply_chat_template(messages, tokenize=False)
        ids, labels = fallback.encode(messages)
        assert (ids, labels) == marked.encode(messages)
        assert labels.count(fallback.eot_id) == sum(m["role"] == "assistant" for m in messages)


@pytest.mark.parametrize("control", ["{% generation %}", "{%- generation %}", "{%- generation -%}", "{%generation%}"])
def test_markers_are_found_whatever_the_whitespace_control(control):
    template = (SHIPPED / "templates/chat/llama31.j2").read_text().replace("{%- generation %}", control)
    chat = ChatTokenizer(family_tokenizer("llama31_8b", template), "llama31")
    assert chat.has_markers
    assert trained_text(chat, CONVERSATION) == "Hello.<|eot_id|>Bye.<|eot_id|>"


def test_smollm2_chatml_fallback_masks_each_reply_and_its_im_end(smollm2):
    chat = ChatTokenizer(smollm2, "SmolLM2-135M-Instruct")
    assert not chat.has_markers and smollm2.eos_token == "<|im_end|>"
    for messages in CHATS:
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert trained_text(chat, messages) == "".join(r + "<|im_end|>" for r in replies)
    # the same template with markers around each reply and its <|im_end|> gives the same mask
    # (its Jinja string literals hold real newlines, as the GGUF stores them)
    marked_template = smollm2.chat_template.replace(
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}",
        "{% if message['role'] == 'assistant' %}{{'<|im_start|>assistant\n'}}{% generation %}"
        "{{message['content'] + '<|im_end|>'}}{% endgeneration %}{{'\n'}}{% else %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endif %}")
    assert marked_template != smollm2.chat_template
    marked_tok = type(smollm2).from_pretrained(smollm2.name_or_path)
    marked_tok.chat_template = marked_template
    marked = ChatTokenizer(marked_tok, "SmolLM2 with markers")
    assert marked.has_markers
    for messages in CHATS:
        assert chat.encode(messages) == marked.encode(messages)


def test_a_template_whose_prompt_is_not_a_token_prefix_fails_naming_it():
    # the generation prompt ends "A: " but a rendered reply follows "A:" directly: a mask found from
    # prefix lengths would be shifted by a token, so the check refuses it.
    template = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ 'Q: ' + m['content'] + '\\n' }}"
                "{% else %}{{ 'A:' + m['content'] + eos_token + '\\n' }}{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}{{ 'A: ' }}{% endif %}")
    chat = ChatTokenizer(family_tokenizer("falcon3_7b", template), "toy", template="templates/chat/shifted.j2")
    with pytest.raises(WebtuneError) as err:
        chat.encode(CONVERSATION[1:3])
    message = str(err.value)
    assert "templates/chat/shifted.j2" in message and "not a token prefix" in message
    assert "\n" not in message


def test_mistral_system_prompt_moving_in_multi_turn_is_refused_without_markers():
    stripped = MARKER.sub("", (SHIPPED / "templates/chat/mistral.j2").read_text())
    chat = ChatTokenizer(family_tokenizer("mistral7b", stripped), "mistral", template="mistral.j2 (no markers)")
    with pytest.raises(WebtuneError, match="mistral.j2 \\(no markers\\).*not a token prefix"):
        chat.encode(CONVERSATION)
