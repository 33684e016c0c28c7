"""BatchEngine in-process on the tiny fixture: sequences that join a running batch, prefilled in
several length-sorted passes, give exactly the text each gives alone (greedy and seeded); stop,
max_tokens, cancel and usage counts hold inside a batch."""
import threading
from types import SimpleNamespace

import pytest

from tests.conftest import FIXTURES
from webtune.deploy.batching import BatchEngine, prefill_chunks
from webtune.deploy.generate import GenerationSettings, generate, load_model


@pytest.fixture(scope="module")
def lm():
    return load_model(FIXTURES / "tiny_model")


def prompts(lm, n):
    return [lm.chat_prompt_ids([{"role": "user", "content": "word " * (1 + 3 * k)}]) for k in range(n)]


def run_batch(engine, jobs, gate=None):
    """Submit (ids, settings, max_new) jobs; the first one alone, the rest when it has streamed a
    piece (so they join a running batch); return the Generations in job order."""
    results, started = {}, threading.Event()

    def emitter(i):
        def emit(piece, gen):
            if i == 0 and piece:
                started.set()
            if gen is not None:
                results[i] = gen
        return emit

    ids, settings, max_new = jobs[0]
    engine.submit(ids, settings, max_new, emitter(0))
    started.wait(30)
    for i, (ids, settings, max_new) in enumerate(jobs[1:], start=1):
        engine.submit(ids, settings, max_new, emitter(i))
    engine.wait_idle()
    return [results[i] for i in range(len(jobs))]


def test_joining_sequences_match_one_at_a_time(lm):
    ids = prompts(lm, 5)
    greedy = [GenerationSettings(max_tokens=12, temperature=0)] * 3
    seeded = [GenerationSettings(max_tokens=12, temperature=0.9, top_p=0.9, seed=k) for k in range(2)]
    jobs = [(p, s, 12) for p, s in zip(ids, greedy + seeded)]
    alone = [generate(lm, p, s) for p, s, _ in jobs]
    engine = BatchEngine(lm, max_batch=8, threads=1, prefill_tokens=30)  # several prefill passes
    try:
        got = run_batch(engine, jobs)
    finally:
        engine.close()
    assert [g.text for g in got] == [a.text for a in alone]
    assert [g.token_ids for g in got] == [a.token_ids for a in alone]
    assert [g.prompt_tokens for g in got] == [len(p) for p in ids]


def test_stop_max_tokens_and_cancel_inside_a_batch(lm):
    ids = prompts(lm, 3)
    free = generate(lm, ids[1], GenerationSettings(max_tokens=30, temperature=0)).text
    stop = free[5:8]
    engine = BatchEngine(lm, max_batch=4, threads=1)
    try:
        got = run_batch(engine, [(ids[0], GenerationSettings(max_tokens=30, temperature=0), 30),
                                 (ids[1], GenerationSettings(max_tokens=30, temperature=0, stop=[stop]), 30),
                                 (ids[2], GenerationSettings(max_tokens=3, temperature=0), 3)])
        pieces, done = [], threading.Event()
        seq = engine.submit(ids[0], GenerationSettings(max_tokens=200, temperature=0), 200,
                            lambda p, g: pieces.append(p) if g is None else done.set())
        seq.cancel()
        assert done.wait(30)
    finally:
        engine.close()
    assert got[1].text == free[:free.index(stop)] and got[1].finish_reason == "stop"
    assert got[2].completion_tokens == 3 and got[2].finish_reason == "length"
    assert got[0].completion_tokens <= 30


def test_prefill_chunks_sort_by_length_and_respect_the_budget():
    seqs = [SimpleNamespace(prompt_ids=[0] * n) for n in (30, 5, 12, 12, 40, 7)]
    chunks = [[len(s.prompt_ids) for s in c] for c in prefill_chunks(seqs, budget=36)]
    # rows x the longest prompt <= 36; a prompt longer than the budget goes alone
    assert chunks == [[5, 7, 12], [12], [30], [40]]
