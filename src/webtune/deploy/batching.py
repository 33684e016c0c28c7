"""Continuous batching for `webtune serve`: one decode thread; sequences join and leave between steps.

All running sequences share one KV cache (transformers' DynamicCache), left-padded to a common
length with a 2-D attention mask, exactly as `generate` pads a batch. Between two decode steps the
scheduler prefills the sequences that arrived (sorted by length, in padded batches of at most
PREFILL_TOKENS tokens), merges their cache into the running one, and drops the rows of sequences that finished (EOS, max_tokens, a stop string
or a client that left), trimming columns that are padding in every row. Each step is one forward
pass for the whole batch; each sequence streams its text as its tokens come.

Free rows are shared by request (`FairQueue`): every sequence is submitted with its request's
`group`; a free row goes to the waiting group with the fewest rows, ties round-robin. A small
request queued behind one with many sequences gets the next free row, not the row after the large
one's last sequence: its wait is bounded by the running sequences' max_tokens, whatever the large
request's size.

Where the time goes (cProfile of the decode thread, SmolLM2-135M, 32 streams, 1 thread): 74% in
`linear` (the model's matmuls), 3.5% attention, 2.7% the cache's `torch.cat`; so the cache is not
pre-allocated: a decode step is bound by the weights' matmuls, not by the bookkeeping.

Why not transformers' own ContinuousBatchingManager: it decides greedy vs sampling once for the
whole batch and samples with torch's global RNG, so a seeded request would not reproduce its text
and greedy and sampled requests could not share a batch. Here each sequence keeps its own sampler
(`generate.sampler`), so a seeded request gives the same text alone or in a batch of 32.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional

from webtune.deploy.generate import Generation, GenerationSettings, LocalModel, StopTrimmer, sampler

log = logging.getLogger("uvicorn.error")
# Prefill at most this many (padded) prompt tokens per forward pass. 32 prompts of ~40 tokens then
# take 3 passes instead of one: the first third streams its first token after a third of the
# prefill (a lower TTFT for most), at ~30 ms of extra Python per pass; prompts are sorted by length
# first so that each pass pads little.
PREFILL_TOKENS = 512


class Detokenizer:
    """Token ids -> text pieces, holding back bytes of a character that is not complete yet."""

    def __init__(self, tokenizer: Any):
        self.tokenizer, self.ids, self.prefix, self.read = tokenizer, [], 0, 0

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def feed(self, token: int) -> str:
        self.ids.append(token)
        before = self._text(self.ids[self.prefix:self.read])
        after = self._text(self.ids[self.prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before):]

    def flush(self) -> str:
        before = self._text(self.ids[self.prefix:self.read])
        return self._text(self.ids[self.prefix:])[len(before):]


@dataclass
class Sequence:
    """One completion being generated. `emit(piece, generation)` is called from the decode thread:
    with each text piece (generation None), then once with "" and the finished Generation (or an
    exception instead of a Generation if the step failed)."""
    prompt_ids: list[int]
    settings: GenerationSettings
    max_new: int
    emit: Callable[[str, Any], None]
    detok: Detokenizer
    trimmer: StopTrimmer = field(init=False)
    tokens: list[int] = field(default_factory=list)
    group: Hashable = None  # the request it belongs to (FairQueue shares rows by it)
    cancelled: bool = False
    finish: Optional[str] = None
    pick: Any = None

    def __post_init__(self):
        self.trimmer = StopTrimmer(self.settings.stop)
        self.pick = sampler(self.settings)

    def cancel(self) -> None:
        """Stop at the next step (thread-safe: the decode thread only reads the flag)."""
        self.cancelled = True

    def push(self, token: int, eos_ids: list[int]) -> None:
        self.tokens.append(token)
        if token in eos_ids:
            self.finish = "stop"
        else:
            out = self.trimmer.feed(self.detok.feed(token))
            if out:
                self.emit(out, None)
            if self.trimmer.stopped:
                self.finish = "stop"
        if self.finish is None and len(self.tokens) >= self.max_new:
            self.finish = "length"

    def done(self) -> None:
        tail = self.trimmer.feed(self.detok.flush()) + self.trimmer.flush()
        if tail:
            self.emit(tail, None)
        text = self.detok._text(self.tokens)
        trim = StopTrimmer(self.settings.stop)
        self.emit("", Generation(trim.feed(text) + trim.flush(), self.tokens, self.finish or "stop",
                                 len(self.prompt_ids)))


class FairQueue:
    """Sequences waiting for a row, by request (group). `take` gives each free row to the waiting
    group with the fewest rows (running or just given); among equals, the one first in line, and a
    group served goes to the back of the line."""

    def __init__(self):
        self.lock = threading.Lock()
        self.groups: "collections.OrderedDict[Hashable, collections.deque[Sequence]]" = collections.OrderedDict()

    def put(self, seq: "Sequence") -> None:
        with self.lock:
            self.groups.setdefault(seq.group, collections.deque()).append(seq)

    def take(self, rows: int, running: list["Sequence"]) -> tuple[list["Sequence"], list["Sequence"]]:
        """(up to `rows` sequences to start beside `running`, every cancelled sequence that was waiting)."""
        held = collections.Counter(s.group for s in running)
        taken, cancelled = [], []
        with self.lock:
            for group, waiting in list(self.groups.items()):
                if any(s.cancelled for s in waiting):
                    cancelled += [s for s in waiting if s.cancelled]
                    waiting = self.groups[group] = collections.deque(s for s in waiting if not s.cancelled)
                if not waiting:
                    del self.groups[group]
            while len(taken) < rows and self.groups:
                group = min(self.groups, key=held.__getitem__)  # min keeps the first of equals
                waiting = self.groups[group]
                taken.append(waiting.popleft())
                held[group] += 1
                if waiting:
                    self.groups.move_to_end(group)
                else:
                    del self.groups[group]
        return taken, cancelled


class BatchEngine:
    """The decode thread for one loaded model. `submit` is thread-safe; `close` lets the running
    sequences finish, then stops the thread. `steps` counts the decode steps taken."""

    def __init__(self, lm: LocalModel, max_batch: int = 32, threads: int = 0, prefill_tokens: int = PREFILL_TOKENS):
        # torch threads of the decode thread; 0: half the cores. An OpenMP team that shares its cores
        # with other processes waits on descheduled members at every op: on the 2-core bench machine
        # under load, 2 threads were 4-7x slower per request than 1 (bench/RESULTS.md, issue 20).
        self.lm, self.max_batch, self.prefill_tokens = lm, max_batch, prefill_tokens
        self.threads = threads or max(1, (os.cpu_count() or 1) // 2)
        self.pending = FairQueue()
        self.rows: list[Sequence] = []
        self.steps = 0
        self.cache: Any = None
        self.mask: Any = None           # [rows, columns] 1 = a real token
        self.last: Any = None           # [rows, 1] the token each row feeds next
        self.busy = 0                   # submitted and not finished
        self.idle = threading.Condition()
        self.closing = False
        self.pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else (lm.eos_ids or [0])[0]
        self.thread = threading.Thread(target=self._loop, name="webtune-decode", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------ the interface
    def submit(self, prompt_ids: list[int], settings: GenerationSettings, max_new: int,
               emit: Callable[[str, Any], None], group: Hashable = None) -> Sequence:
        """Queue one sequence of request `group` (None: one group for all such calls, in order)."""
        seq = Sequence(list(prompt_ids), settings, max_new, emit, Detokenizer(self.lm.tokenizer), group=group)
        with self.idle:
            if self.closing:
                raise RuntimeError("this engine is closed")
            self.busy += 1
            self.idle.notify_all()
        if max_new <= 0:
            self._finish(seq)
        else:
            self.pending.put(seq)
        return seq

    def wait_idle(self) -> None:
        """Block until every submitted sequence has finished."""
        with self.idle:
            self.idle.wait_for(lambda: self.busy == 0)

    def close(self) -> None:
        """Finish what is running, stop the thread and drop the model's cache."""
        with self.idle:
            self.closing = True
            self.idle.notify_all()
        self.thread.join()
        self.cache = self.mask = self.last = None

    # ------------------------------------------------------------ the decode thread
    def _loop(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            while True:
                with self.idle:
                    self.idle.wait_for(lambda: self.busy > 0 or self.closing)
                    if self.busy == 0 and self.closing:
                        return
                try:
                    self._admit()
                    if self.rows:
                        self._step()
                except Exception as e:  # every sequence in the batch fails; the engine goes on
                    log.exception("decode step failed")
                    self._fail_all(e)

    def _admit(self) -> None:
        new, cancelled = self.pending.take(self.max_batch - len(self.rows), self.rows)
        for seq in cancelled:
            self._finish(seq)
        for chunk in prefill_chunks(new, self.prefill_tokens):
            self._prefill(chunk)

    def _prefill(self, new: list[Sequence]) -> None:
        import torch
        from transformers import DynamicCache

        device = self.lm.model.device
        width = max(len(s.prompt_ids) for s in new)
        ids = torch.full((len(new), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, s in enumerate(new):
            ids[i, width - len(s.prompt_ids):] = torch.tensor(s.prompt_ids)
            mask[i, width - len(s.prompt_ids):] = 1
        ids, mask = ids.to(device), mask.to(device)
        offset = len(self.rows)
        self.rows += new  # before the forward pass: if it fails, _fail_all fails these too
        cache = DynamicCache()
        logits = self._forward(ids, mask, cache)
        self.cache, self.mask = _merge(self.cache, self.mask, cache, mask)
        self._pick(new, logits, offset)

    def _forward(self, ids: Any, mask: Any, cache: Any) -> Any:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        out = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                            use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]

    def _step(self) -> None:
        import torch

        mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        logits = self._forward(self.last, mask, self.cache)
        self.mask = mask
        self.steps += 1
        self._pick(self.rows, logits, offset=0)

    def _pick(self, seqs: list[Sequence], logits: Any, offset: int) -> None:
        """Choose each row's next token, feed it to its sequence, retire the finished rows."""
        import torch

        greedy = logits.argmax(-1)
        chosen = [int(s.pick(logits[i:i + 1])[0, 0]) if s.pick else int(greedy[i]) for i, s in enumerate(seqs)]
        for s, token in zip(seqs, chosen):
            s.push(token, self.lm.eos_ids)
        last = torch.tensor(chosen, device=logits.device).unsqueeze(1)
        self.last = last if offset == 0 else torch.cat([self.last, last]) if self.last is not None else last
        keep = [i for i, s in enumerate(self.rows) if s.finish is None and not s.cancelled]
        if len(keep) < len(self.rows):
            for s in self.rows:
                if s.finish is not None or s.cancelled:
                    self._finish(s)
            self._select(keep)

    def _select(self, keep: list[int]) -> None:
        import torch

        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.last = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.mask, self.last = self.mask[index], self.last[index]
        # columns that are padding in every row left: drop them
        start = int((self.mask.cumsum(-1) == 0).sum(-1).min())
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]

    def _finish(self, seq: Sequence) -> None:
        try:
            seq.done()
        finally:
            with self.idle:
                self.busy -= 1
                self.idle.notify_all()

    def _fail_all(self, error: Exception) -> None:
        failed = self.rows
        self.rows, self.cache, self.mask, self.last = [], None, None, None
        for s in failed:
            s.emit("", error)
            with self.idle:
                self.busy -= 1
                self.idle.notify_all()


def prefill_chunks(new: list[Sequence], budget: int) -> list[list[Sequence]]:
    """`new` sorted by prompt length (shortest first) and cut into batches of at most `budget`
    padded tokens (rows x the longest prompt); a prompt longer than the budget goes alone."""
    chunks: list[list[Sequence]] = []
    for seq in sorted(new, key=lambda s: len(s.prompt_ids)):
        if chunks and (len(chunks[-1]) + 1) * len(seq.prompt_ids) <= budget:
            chunks[-1].append(seq)
        else:
            chunks.append([seq])
    return chunks


def _merge(cache: Any, mask: Any, new_cache: Any, new_mask: Any) -> tuple[Any, Any]:
    """Stack two left-padded batches (cache and mask) into one, padding the shorter on the left."""
    import torch
    import torch.nn.functional as F

    if cache is None:
        return new_cache, new_mask
    width = max(mask.shape[1], new_mask.shape[1])

    def widen(t: Any, dim_from_end: int) -> Any:
        missing = width - t.shape[-dim_from_end]
        if missing == 0:
            return t
        pad = [0, 0] * (dim_from_end - 1) + [missing, 0]
        return F.pad(t, pad)

    for layer, new in zip(cache.layers, new_cache.layers):
        layer.keys = torch.cat([widen(layer.keys, 2), widen(new.keys, 2)])
        layer.values = torch.cat([widen(layer.values, 2), widen(new.values, 2)])
    return cache, torch.cat([widen(mask, 1), widen(new_mask, 1)])
