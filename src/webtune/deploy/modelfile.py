"""An Ollama `Modelfile` for an exported GGUF: a Go `TEMPLATE` that renders what the run's Jinja
chat template renders, the template's default system prompt, and its stop tokens.

Ollama renders its TEMPLATE with Go's text/template over `.Messages` (each `.Role`, `.Content`) and
llama.cpp puts BOS in front when the GGUF says `tokenizer.ggml.add_bos_token`. A chat layout we know
(Llama 3, ChatML, Gemma 3) is written as a Go template; a template that injects a default system message when
the conversation has none (SmolLM2's ChatML) gets the same fallback in Go:
`{{ if ne (index .Messages 0).Role "system" }}...default...{{ end }}`. The Modelfile is written only if
the layout, rendered the way the Go template does (`Layout.render`), equals the Jinja template's output
on probe conversations (with and without a system message, one and several turns); otherwise the
export refuses `--ollama` in one line. tests/deploy/test_export.py renders the written TEMPLATE with
Go's own text/template and compares it with Jinja too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from webtune.errors import WebtuneError

ROLE, CONTENT = "{{ .Role }}", "{{ .Content }}"


@dataclass
class Layout:
    """A chat layout Ollama can express: one message (`turn`, with {role} and {content}), the text
    that opens the assistant's reply, and the stop strings that end a turn."""
    name: str
    turn: str
    open_assistant: str
    stops: list[str]

    def go_template(self, default_system: str = "") -> str:
        """The Modelfile TEMPLATE: every message as `turn`, then the opened reply; with a default
        system message when the first message is not a system one (and there is a first)."""
        head = ""
        if default_system:
            system = self.turn.format(role="system", content=default_system)
            head = f'{{{{- if .Messages }}}}{{{{ if ne (index .Messages 0).Role "system" }}}}{system}{{{{ end }}}}{{{{ end }}}}'
        body = self.turn.format(role=ROLE, content=CONTENT)
        return f"{head}{{{{- range .Messages }}}}{body}{{{{ end }}}}{self.open_assistant}"

    def render(self, messages: list[dict], default_system: str = "") -> str:
        """What `go_template(default_system)` renders for `messages`, in Python."""
        if default_system and messages and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": default_system}, *messages]
        return "".join(self.turn.format(role=m["role"], content=m["content"]) for m in messages) + self.open_assistant


class GemmaLayout(Layout):
    """Gemma 3: no system role (a system message opens the first user turn, then a blank line), and
    the assistant's role is `model`. The Go template remembers the previous role (`$prev`, Go 1.11+
    variable assignment) to leave the user turn open after a system message."""

    def go_template(self, default_system: str = "") -> str:
        if default_system:
            raise ValueError("Gemma's template has no default system message")
        return ('{{ $prev := "" }}{{ range .Messages }}{{ if eq .Role "system" }}<start_of_turn>user\n{{ .Content }}\n\n'
                '{{ else if eq .Role "user" }}{{ if ne $prev "system" }}<start_of_turn>user\n{{ end }}'
                '{{ .Content }}<end_of_turn>\n{{ else }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n'
                '{{ end }}{{ $prev = .Role }}{{ end }}<start_of_turn>model\n')

    def render(self, messages: list[dict], default_system: str = "") -> str:
        out, prev = [], ""
        for m in messages:
            if m["role"] == "system":
                out.append(f"<start_of_turn>user\n{m['content']}\n\n")
            elif m["role"] == "user":
                out.append(("" if prev == "system" else "<start_of_turn>user\n") + f"{m['content']}<end_of_turn>\n")
            else:
                out.append(f"<start_of_turn>model\n{m['content']}<end_of_turn>\n")
            prev = m["role"]
        return "".join(out) + self.open_assistant


LAYOUTS = [
    Layout("llama3", "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
           "<|start_header_id|>assistant<|end_header_id|>\n\n", ["<|eot_id|>"]),
    Layout("chatml", "<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n", ["<|im_end|>"]),
    GemmaLayout("gemma3", "<start_of_turn>{role}\n{content}<end_of_turn>\n", "<start_of_turn>model\n",
                ["<end_of_turn>"]),
]
PROBES = [
    [{"role": "system", "content": "You write product copy."},
     {"role": "user", "content": "Describe a bottle."},
     {"role": "assistant", "content": "A steel bottle."},
     {"role": "user", "content": "Shorter."}],
    [{"role": "user", "content": "Describe a bottle."},
     {"role": "assistant", "content": "A steel bottle."},
     {"role": "user", "content": "Shorter."}],
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
]


def jinja_renderer(tokenizer: Any, add_bos: bool) -> Callable[[list[dict]], str]:
    """The run's chat template for a conversation, less the BOS that llama.cpp adds itself."""
    def render(messages: list[dict]) -> str:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = tokenizer.bos_token or ""
        return text[len(bos):] if add_bos and bos and text.startswith(bos) else text
    return render


def modelfile(tokenizer: Any, eos_ids: list[int], gguf_name: str, add_bos: bool, where: Path,
              trained_system: Optional[str] = None) -> str:
    """The Modelfile text; a WebtuneError naming `where` if no known layout renders like the template.
    `trained_system` (the prompt the run trained with, see system_prompt.py) replaces the template's
    own default system message, in the TEMPLATE's fallback and the SYSTEM line."""
    jinja = jinja_renderer(tokenizer, add_bos)
    for layout in LAYOUTS:
        system = default_system(jinja, layout)
        if system is None:
            continue
        served = system if trained_system is None else trained_system
        try:
            template = layout.go_template(served)
        except ValueError:  # a layout without a system fallback: Ollama sends SYSTEM itself
            template = layout.go_template(system)
        if '"""' in template or "{{" in served or '"""' in served:
            continue  # cannot be quoted in a Modelfile / would be read as template code
        stops = list(dict.fromkeys(layout.stops + [tokenizer.decode([i]) for i in eos_ids]))
        lines = [f"# written by webtune export from the run's chat template (layout {layout.name})",
                 f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
        if served:  # the same message the TEMPLATE falls back to; Ollama also sends it when none is given
            lines.append(f'SYSTEM """{served}"""')
        lines += [f'PARAMETER stop "{s}"' for s in stops]
        return "\n".join(lines) + "\n"
    raise WebtuneError(f"{where}: --ollama: the chat template is not one of the layouts an Ollama TEMPLATE is "
                       f"written for here ({', '.join(x.name for x in LAYOUTS)}); export without --ollama and "
                       f"write the Modelfile by hand")


def default_system(jinja: Callable[[list[dict]], str], layout: Layout) -> Optional[str]:
    """The default system message the template adds when a conversation has none ('' for none),
    if `layout` with it renders every probe as the template does; None if it does not."""
    bare = PROBES[1]
    text = jinja(bare)
    system = ""
    if text != layout.render(bare):
        head, _, tail = layout.turn.format(role="system", content="\x00").partition("\x00")
        if not (text.startswith(head) and tail in text[len(head):]):
            return None
        system = text[len(head):text.index(tail, len(head))]
    if all(jinja(p) == layout.render(p, system) for p in PROBES):
        return system
    return None
