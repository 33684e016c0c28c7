"""Chat examples to token ids and a loss mask, with the tokenizer's own chat template.

Loss falls on assistant tokens only. We insist that the end-of-turn token is inside the mask
(otherwise the model never learns to stop: TRL issue 7230). Templates with `{% generation %}`
markers give the mask directly; for others it is recovered from rendered prefixes.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import WebtuneError
from ..models import check_local_path

IGNORE = -100


def load_tokenizer(model_cfg):
    from transformers import AutoTokenizer
    from ..base_model import source_of
    name = model_cfg.tokenizer or source_of(model_cfg)
    check_local_path(name, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        raise WebtuneError(f"cannot load tokenizer {name!r}: {str(exc).splitlines()[0]} "
                           f"(set model.name_or_path to a hub id or a local directory)") from exc
    if model_cfg.chat_template:
        tok.chat_template = Path(model_cfg.chat_template).read_text()
    eos = model_cfg.get("eos_token")
    if eos:  # the end-of-turn token the loss must include and generation stops at
        if eos not in tok.get_vocab():
            raise WebtuneError(f"model.eos_token={eos!r} is not a token of {name!r}; give a token of its "
                               f"vocabulary (the one its chat template ends a reply with)")
        tok.eos_token = eos
    if not tok.chat_template:
        raise WebtuneError(f"tokenizer {name!r} has no chat template: set model.chat_template to a Jinja file "
                           f"(see templates/chat/ for ready ones)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# `{% generation %}`, `{%- generation -%}`, `{%+ generation %}`...: whatever the whitespace control
GENERATION_TAG = re.compile(r"\{%[-+]?\s*generation\s*[-+]?%\}")


def template_label(model_cfg) -> str:
    """How an error names the chat template: its file, or the tokenizer it came with."""
    return model_cfg.chat_template or f"the chat template of {model_cfg.tokenizer or model_cfg.name_or_path}"


class ChatTokenizer:
    def __init__(self, tok, name: str = "", template: str | None = None):
        self.tok, self.name = tok, name
        self.template = template or f"the chat template of {name or 'the tokenizer'}"
        self.eot_id = tok.eos_token_id
        self.has_markers = bool(GENERATION_TAG.search(tok.chat_template or ""))

    @classmethod
    def for_model(cls, model_cfg) -> "ChatTokenizer":
        return cls(load_tokenizer(model_cfg), model_cfg.name_or_path, template_label(model_cfg))

    def same_format(self, other: "ChatTokenizer") -> bool:
        """Same vocabulary, chat template and end-of-turn token: losses of two models are comparable."""
        return (self.tok.chat_template == other.tok.chat_template and self.eot_id == other.eot_id
                and self.tok.get_vocab() == other.tok.get_vocab())

    def encode(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """(input_ids, labels) with labels = IGNORE outside assistant turns."""
        if self.has_markers:
            out = self.tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                               return_assistant_tokens_mask=True)
            ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        else:
            ids, mask = self._mask_from_prefixes(messages)
        labels = [t if m else IGNORE for t, m in zip(ids, mask)]
        self._check_end_of_turn(ids, labels)
        return ids, labels

    def _mask_from_prefixes(self, messages):
        """Without markers: each reply runs from the end of the rendered prompt before it (with the
        generation prompt) to its end-of-turn token. Both rendered prefixes must be token prefixes of
        the whole conversation, or the mask would be shifted: that fails, naming the template."""
        ids = self._ids(messages, add_generation_prompt=False)
        mask = [0] * len(ids)
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            start = self._prefix_length(ids, messages[:i], True, i)
            end = self._prefix_length(ids, messages[: i + 1], False, i)
            eot = next((j for j in range(start, end) if ids[j] == self.eot_id), end - 1)
            mask[start:eot + 1] = [1] * (eot + 1 - start)
        return ids, mask

    def _prefix_length(self, ids, messages, add_generation_prompt: bool, turn: int) -> int:
        prefix = self._ids(messages, add_generation_prompt=add_generation_prompt) if messages else []
        if ids[: len(prefix)] != prefix:
            what = "the prompt before" if add_generation_prompt else "the conversation up to"
            raise WebtuneError(
                f"{self.template}: rendering {what} message {turn} (an assistant turn) is not a token prefix of "
                f"the whole conversation, so the loss mask cannot be found from prefixes; add "
                f"{{% generation %}}...{{% endgeneration %}} around each reply and its end-of-turn token")
        return len(prefix)

    def _ids(self, messages, add_generation_prompt):
        out = self.tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                           add_generation_prompt=add_generation_prompt)
        return list(out["input_ids"])

    def _check_end_of_turn(self, ids, labels):
        if self.eot_id is None:
            return
        trained = [t for t, lab in zip(ids, labels) if lab != IGNORE]
        if trained and self.eot_id not in trained:
            eot = self.tok.convert_ids_to_tokens(self.eot_id)
            raise WebtuneError(
                f"the chat template of {self.name or 'the tokenizer'} leaves the end-of-turn token {eot!r} out of the "
                f"assistant loss mask, so the model would never learn to stop; put it inside the "
                f"{{% generation %}} block or set model.chat_template to a template that does")

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The prompt for generation: every turn before the last assistant turn."""
        return self._ids(messages, add_generation_prompt=True)
