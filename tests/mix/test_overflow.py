"""The default over-length policy never trains an example whose end-of-turn token was cut off."""
from __future__ import annotations

import orjson

from tests.conftest import TINY_CONFIG
from webtune.hydra_setup import compose
from webtune.ledger import LedgerWriter
from webtune.mix.mix import TokenCounter, encode_split
from webtune.chat.tokenize import IGNORE


def example(i: int, words: int) -> dict:
    reply = " ".join(["The lamp is bright and the light is warm."] * words)
    return {"id": f"r{i}/t", "record_id": f"example:products.json#{i}", "source": "example", "side": "domain",
            "messages": [{"role": "user", "content": f"Describe lamp {i}."}, {"role": "assistant", "content": reply}]}


def encode(tmp_path, *overrides):
    cfg = compose([*TINY_CONFIG, "mix.max_seq_len=64", *overrides])
    counter = TokenCounter(cfg)
    ledger = LedgerWriter(tmp_path, "mix")
    out = encode_split([example(1, 1), example(2, 12), example(3, 2)], counter, cfg.mix, ledger)
    ledger.close()
    events = [orjson.loads(x) for x in ledger.path.read_bytes().splitlines()]
    return out, events, counter.tokenizer.eot_id


def test_an_over_long_example_is_dropped_with_a_ledger_reason_not_trained_without_its_end_of_turn(tmp_path):
    out, events, eot = encode(tmp_path)
    assert [ex["id"] for ex in out] == ["r1/t", "r3/t"]          # the 12-sentence reply does not fit in 64 tokens
    for ex in out:
        trained = [t for t in ex["labels"] if t != IGNORE]
        assert trained[-1] == eot and len(ex["input_ids"]) <= 64
    [dropped] = events
    assert (dropped["id"], dropped["status"], dropped["reason"]) == ("example:products.json#2", "rejected", "too_long")
    assert "> max_seq_len 64" in dropped["detail"]


def test_truncate_would_train_it_without_its_end_of_turn(tmp_path):
    """What the default avoids: `truncate` keeps the example but cuts its reply's end-of-turn token."""
    out, events, eot = encode(tmp_path, "mix.packing.overflow=truncate")
    cut = next(ex for ex in out if ex["id"] == "r2/t")
    assert len(cut["input_ids"]) == 64 and eot not in [t for t in cut["labels"] if t != IGNORE]
    assert events[0]["reason"] == "truncated"


def test_split_covers_every_token_once_in_pieces_of_at_most_max_seq_len(tmp_path):
    """Continuation training: the long example becomes consecutive pieces, tokens and labels together."""
    cfg = compose([*TINY_CONFIG, "mix.max_seq_len=64"])
    ids, labels = TokenCounter(cfg).encode(example(2, 12)["messages"])
    out, events, _ = encode(tmp_path, "mix.packing.overflow=split")
    pieces = [ex for ex in out if ex["id"].startswith("r2/t~")]
    assert [ex["id"] for ex in pieces] == [f"r2/t~{k}" for k in range(1, len(pieces) + 1)] and len(pieces) > 1
    assert all(len(ex["input_ids"]) <= 64 for ex in pieces)
    assert sum((ex["input_ids"] for ex in pieces), []) == ids
    assert sum((ex["labels"] for ex in pieces), []) == labels
    assert [(e["status"], e["reason"]) for e in events] == [("repaired", "split")]
