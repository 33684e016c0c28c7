"""Local generation shared by `webtune chat` and `webtune serve`.

One loaded model (`LocalModel`), prompts rendered with exactly the chat template saved with the
model's tokenizer, greedy or seeded sampling, stop strings, streaming through transformers'
TextIteratorStreamer (sync, for the REPL) or AsyncTextIteratorStreamer (for the server), and
per-token log-probabilities for `/v1/completions` with `echo` + `logprobs`.
"""
from __future__ import annotations

import asyncio
import json
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Optional

from webtune.errors import WebtuneError


@dataclass
class GenerationSettings:
    max_tokens: Optional[int] = None   # None: whatever the context window leaves
    temperature: float = 1.0           # 0: greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: Optional[int] = None


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    finish_reason: str                 # stop|length
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class TokenLogprob:
    token: str
    logprob: Optional[float]           # None for the first token: nothing precedes it
    top: Optional[dict[str, float]]


class LocalModel:
    """A causal LM and its tokenizer, loaded from one directory with `from_pretrained`."""

    def __init__(self, model: Any, tokenizer: Any, path: Path):
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        self.eos_ids = sorted(eos)
        cfg = model.config
        self.max_context = int(getattr(cfg, "max_position_embeddings", None) or tokenizer.model_max_length)
        from webtune.deploy.system_prompt import default_system

        self.default_system = default_system(path)  # for conversations without one: the trained prompt

    def with_system(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.default_system and (not messages or messages[0].get("role") != "system"):
            return [{"role": "system", "content": self.default_system}, *messages]
        return messages

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer.apply_chat_template(self.with_system(messages), add_generation_prompt=True,
                                                  tokenize=True, return_dict=False)

    def chat_prompt_text(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(self.with_system(messages), add_generation_prompt=True,
                                                  tokenize=False)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def load_model(path: str | Path) -> LocalModel:
    """Load an HF model directory (full model, or a PEFT adapter whose base loads by path)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise WebtuneError(f"{path}: no config.json or adapter_config.json; expected a model saved with "
                           f"save_pretrained")
    adapter = (path / "adapter_config.json").exists()
    tokenizer = load_tokenizer(path)
    if adapter:
        from peft import AutoPeftModelForCausalLM
        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype="auto")
        if json.loads((path / "adapter_config.json").read_text()).get("trainable_token_indices"):
            # unmerged, PEFT's trainable tokens rebuild the whole embedding on every forward (Gemma 3
            # 270M: 262,144 x 640, the tied output layer too): ~1 s a token on CPU
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    import torch

    if torch.cuda.is_available():
        model.to("cuda")
    model.eval()
    return LocalModel(model, tokenizer, path)


def load_tokenizer(path: Path) -> Any:
    """The tokenizer saved with a model directory (an adapter's base's if it has none), which must
    carry a chat template."""
    from transformers import AutoTokenizer

    tok_path = path
    if (path / "adapter_config.json").exists() and not (path / "tokenizer_config.json").exists():
        tok_path = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    if not tokenizer.chat_template:
        raise WebtuneError(f"{path}: the tokenizer has no chat_template; save the one the model was "
                           f"trained with (model.chat_template in the config)")
    return tokenizer


def check_context(lm: LocalModel, prompt_len: int, max_tokens: Optional[int]) -> int:
    """The number of new tokens to generate; a WebtuneError if the request cannot fit."""
    room = lm.max_context - prompt_len
    if max_tokens is None:
        max_tokens = room
    if max_tokens > room or room <= 0:
        raise WebtuneError(f"the prompt has {prompt_len} tokens and max_tokens is {max_tokens}, but the "
                           f"model's context is {lm.max_context} tokens; shorten the prompt or lower max_tokens")
    return max_tokens


class StopTrimmer:
    """Cuts streamed text at the first stop string, holding back a tail that may begin one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.buf = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buf += piece
        hits = [self.buf.find(s) for s in self.stops if s in self.buf]
        if hits:
            out, self.buf, self.stopped = self.buf[:min(hits)], "", True
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buf)), 0, -1):
                if self.buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out, self.buf = self.buf[:len(self.buf) - hold], self.buf[len(self.buf) - hold:]
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.stopped else self.buf), ""
        return out


def sampler(settings: GenerationSettings) -> Optional[Any]:
    """A function scores [rows, vocab] -> picked token ids [rows, 1] for a sampled request, with its
    own torch.Generator, so a seeded request gives the same text whatever else runs (torch's global
    RNG is shared by all threads and requests); None for greedy (temperature 0)."""
    import torch
    from transformers import TopPLogitsWarper

    if settings.temperature <= 0:
        return None
    gen = torch.Generator().manual_seed(settings.seed if settings.seed is not None
                                        else random.getrandbits(63))
    top_p = TopPLogitsWarper(settings.top_p) if settings.top_p < 1.0 else None

    def pick(scores):
        scores = scores.float() / settings.temperature
        if top_p is not None:
            scores = top_p(None, scores)
        probs = torch.softmax(scores, dim=-1).cpu()  # the generator lives on the CPU
        return torch.multinomial(probs, 1, generator=gen).to(scores.device)
    return pick


def _logits_processors(settings: GenerationSettings) -> list:
    """`sampler` as a logits processor for `model.generate`."""
    import torch
    from transformers import LogitsProcessor

    pick = sampler(settings)
    if pick is None:
        return []

    class SeededSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            # leave only the sampled token, so greedy decoding picks it
            return torch.full_like(scores, float("-inf")).scatter_(1, pick(scores), 0.0)

    return [SeededSampler()]


def generate(lm: LocalModel, prompt_ids: list[int], settings: GenerationSettings,
             streamer: Any = None, cancel: Optional[threading.Event] = None) -> Generation:
    """Generate one completion (blocking). `cancel` set from another thread stops it early."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    max_new = check_context(lm, len(prompt_ids), settings.max_tokens)
    criteria = []
    if cancel is not None:
        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)
        criteria.append(Cancelled())
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else (lm.eos_ids or [0])[0]
    ids = torch.tensor([prompt_ids], device=lm.model.device)
    if max_new == 0:  # echo-only scoring requests
        out_ids: list[int] = []
        if streamer is not None:
            streamer.end()
    else:
        config = GenerationConfig(max_new_tokens=max_new, do_sample=False, eos_token_id=lm.eos_ids or None,
                                  pad_token_id=pad, stop_strings=[s for s in settings.stop if s] or None)
        out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config,
                                logits_processor=LogitsProcessorList(_logits_processors(settings)),
                                stopping_criteria=StoppingCriteriaList(criteria), streamer=streamer,
                                tokenizer=lm.tokenizer)
        out_ids = out[0, len(prompt_ids):].tolist()
    hit_eos = bool(out_ids) and out_ids[-1] in lm.eos_ids
    text = lm.decode(out_ids)
    trimmer = StopTrimmer(settings.stop)
    text = trimmer.feed(text) + trimmer.flush()
    finish = "stop" if hit_eos or trimmer.stopped or len(out_ids) < max_new else "length"
    return Generation(text, out_ids, finish, len(prompt_ids))


class TextStream:
    """Iterate text pieces as they are generated (TextIteratorStreamer); `.result` afterwards."""

    def __init__(self, lm: LocalModel, prompt_ids: list[int], settings: GenerationSettings):
        from transformers import TextIteratorStreamer

        check_context(lm, len(prompt_ids), settings.max_tokens)
        self.lm, self.prompt_ids, self.settings = lm, prompt_ids, settings
        self.cancel = threading.Event()
        self.streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.result: Optional[Generation] = None
        self._error: Optional[BaseException] = None

    def _run(self) -> None:
        try:
            self.result = generate(self.lm, self.prompt_ids, self.settings, self.streamer, self.cancel)
        except BaseException as e:  # surfaced in the consumer's thread
            self._error = e
            self.streamer.end()

    def __iter__(self) -> Iterator[str]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        trimmer = StopTrimmer(self.settings.stop)
        try:
            for piece in self.streamer:
                out = trimmer.feed(piece)
                if out:
                    yield out
                if trimmer.stopped:
                    self.cancel.set()
            tail = trimmer.flush()
            if tail:
                yield tail
        finally:
            self.cancel.set()
            thread.join()
        if self._error is not None:
            raise self._error


async def astream(lm: LocalModel, prompt_ids: list[int], settings: GenerationSettings, executor: Any,
                  result: list) -> AsyncIterator[str]:
    """Async text pieces for the server: generation runs in `executor`, the event loop stays free.
    The Generation is appended to `result` when done. Closing the iterator cancels generation."""
    from transformers import AsyncTextIteratorStreamer

    check_context(lm, len(prompt_ids), settings.max_tokens)
    streamer = AsyncTextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    cancel = threading.Event()

    def run() -> Generation:
        try:
            return generate(lm, prompt_ids, settings, streamer, cancel)
        except BaseException:
            streamer.end()
            raise

    future = asyncio.get_running_loop().run_in_executor(executor, run)
    trimmer = StopTrimmer(settings.stop)
    try:
        async for piece in streamer:
            out = trimmer.feed(piece)
            if out:
                yield out
            if trimmer.stopped:
                cancel.set()
        tail = trimmer.flush()
        if tail:
            yield tail
        result.append(await future)
    finally:
        cancel.set()


def token_logprobs(lm: LocalModel, ids: list[int], top: int = 0) -> list[TokenLogprob]:
    """Log-probability of each token given the ones before it (one forward pass), with the `top`
    most likely alternatives; what lm-evaluation-harness sums for log-likelihood tasks."""
    import torch

    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids], device=lm.model.device)).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    pieces = [lm.tokenizer.decode([i]) for i in ids]
    out = [TokenLogprob(pieces[0], None, None)]
    for pos in range(1, len(ids)):
        row = logp[pos - 1]
        alts = None
        if top > 0:
            vals, idx = torch.topk(row, top)
            alts = {}
            for v, i in zip(vals.tolist(), idx.tolist()):
                alts.setdefault(lm.tokenizer.decode([i]), v)
        out.append(TokenLogprob(pieces[pos], float(row[ids[pos]]), alts))
    return out


# ---------------------------------------------------------------- a tiny model for tests and benchmarks
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "A fine-tuned model answers questions about products, prices and reviews.",
    "Stainless steel water bottle keeps drinks cold for twenty four hours.",
    "Wireless headphones with noise cancelling and a long battery life.",
    "Hello! How can I help you today? Thanks, that is all.",
]


def make_tiny_chat_model(out_dir: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Save a random tiny Llama (byte-level BPE tokenizer, Llama-3 style chat template) to
    `out_dir`. Tests and benchmarks serve it; it produces noise, quickly. Its vocabulary is
    printable ASCII: other input characters are dropped."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # printable ASCII only, so even a random model streams readable (if meaningless) text
    ascii_text = "".join(chr(c) for c in range(32, 127)) + "\n"
    printable = sorted({ch for piece, _ in tok.pre_tokenizer.pre_tokenize_str(ascii_text) for ch in piece})
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=_SPECIALS, initial_alphabet=printable)
    tok.train_from_iterator(_TEXT * 4, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                   eos_token="<|eot_id|>", pad_token="<|eot_id|>")
    fast.chat_template = LLAMA3_CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=bos,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    return out
