"""The prepare map's steps one at a time, on real records from the files source, a real ledger and
real templates: what each step does to a Doc, what it writes, what it counts and what it times."""
from __future__ import annotations

import numpy as np
import orjson

from webtune.ledger import LedgerWriter
from webtune.prepare import PrepareInput
from webtune.prepare.mapper import input_plan, setup
from webtune.prepare.reduce import global_ranks, order_keys
from webtune.prepare.shardfiles import Candidate, encode, read_candidates
from webtune.prepare.steps import (Clean, Doc, Filter, FilterWords, Parse, Render, Serialize, Shard, Timer, Validate,
                                   batched)
from webtune.sources import iter_records

from .conftest import prepare_cfg, product, product_template, read_jsonl, source, write_jsonl


def _shard(tmp_path, cfg, items, templates):
    path = write_jsonl(tmp_path / "d" / "shop.jsonl", items)
    inputs = [PrepareInput("domain", source("shop", path), product_template(templates), [path], iter_records)]
    ready = setup(cfg, inputs)
    counts: dict = {}
    plans = [input_plan(ready, 0, inputs[0], counts)]
    ledger = LedgerWriter(tmp_path / "run", "prepare", part="0")
    return ready, plans, counts, ledger, Shard(ledger, Timer())


def _events(tmp_path):
    return read_jsonl(tmp_path / "run" / "ledger" / "prepare" / "0.jsonl")


def test_each_step_does_its_job_counts_its_rejections_and_times_itself(tmp_path, templates):
    items = [product(1, description="<p>" + product(1)["description"] + "</p>"),  # cleaned, kept
             b"[1, 2]",                                                          # parse: not an object
             {"error": "dead page", "error_code": "dead_page"},                  # parse: error record
             {k: v for k, v in product(3).items() if k != "brand"},              # validate: no brand
             product(4, description="Too short to keep."),                       # filter: too_short
             product(5)]
    cfg = prepare_cfg(min_chars=40)
    ready, plans, counts, ledger, at = _shard(tmp_path, cfg, items, templates)
    docs = Parse(at)(plans)
    docs = Clean(at, ready.cleaner)(docs)
    docs = Validate(at)(docs)
    docs = Filter(at, ready.filters, "description", False)(docs)
    out = list(Render(at, True)(docs))
    ledger.close()
    assert [d.id for d in out] == ["shop:shop.jsonl#1", "shop:shop.jsonl#6"]
    assert "<p>" not in out[0].fields["description"] and out[0].judged == out[0].fields["description"]
    assert [name for name, _ in out[0].examples] == ["product_description"]
    assert counts == {"shop": {"in": 6, "rejected": 4}}
    fates = [(e["id"].split("#")[1], e["stage"], e["status"], e["reason"]) for e in _events(tmp_path)]
    assert fates == [("1", "clean", "repaired", "html_stripped"), ("2", "parse", "rejected", "not_an_object"),
                     ("3", "parse", "rejected", "error_record"), ("4", "render", "rejected", "missing_field"),
                     ("5", "filter", "rejected", "too_short")]
    assert {"parse", "clean", "validate", "filter", "render"} <= set(at.timer.seconds)


def test_serialize_lets_go_of_the_record_and_its_bytes_read_back(tmp_path, templates):
    """What a batch holds is only what the numpy steps and the writer read (the GC cost of holding
    2,048 records' fields and messages), and cand-<shard>.jsonl reads back as the same Candidate."""
    cfg = prepare_cfg()
    ready, plans, counts, ledger, at = _shard(tmp_path, cfg, [product(1), product(2)], templates)
    steps = [Clean(at, ready.cleaner), Validate(at), Filter(at, ready.filters, None, False), Render(at, True)]
    docs = Parse(at)(plans)
    for step in steps:
        docs = step(docs)
    rendered = list(docs)
    wanted = [Serialize.candidate(d) for d in rendered]
    out = list(Serialize(at)(rendered))
    ledger.close()
    assert all(d.fields is None and d.examples is None and d.tasks is None for d in out)
    assert [d.key for d in out] == [(0, 0, 1), (0, 0, 2)]
    assert out[0].sign_text.startswith(product(1)["title"])  # dedupe reads the template's fields
    cand = tmp_path / "work"
    cand.mkdir()
    (cand / "cand-0.jsonl").write_bytes(b"".join(d.encoded for d in out))
    got = list(read_candidates(cand, 0, [0, len(out[0].encoded)]))
    assert got == wanted
    line = orjson.loads(got[1].lines[0])
    assert (line["id"], line["record_id"], line["side"]) == ("shop:shop.jsonl#2/product_description",
                                                            "shop:shop.jsonl#2", "domain")


def test_candidates_read_back_out_of_order(tmp_path):
    """A round-robin source leaves a shard's candidates out of input order: reading seeks."""
    cands = [Candidate(f"s:f#{i}", "s", [f"s:f#{i}/t"] * (i % 2 + 1), ["t"], "", [b'{"n": %d}\n' % i] * (i % 2 + 1))
             for i in range(4)]
    blobs = [encode(c) for c in cands]
    offsets = np.cumsum([0] + [len(b) for b in blobs])[:-1].tolist()
    (tmp_path / "cand-3.jsonl").write_bytes(b"".join(blobs))
    order = [2, 0, 3, 1]
    assert list(read_candidates(tmp_path, 3, [offsets[i] for i in order])) == [cands[i] for i in order]


def test_word_filters_reject_in_a_batch_and_keep_the_rest(tmp_path, templates):
    cfg = prepare_cfg(min_words=30)
    ready, plans, counts, ledger, at = _shard(tmp_path, cfg, [product(1), product(2, description="a few words only")],
                                              templates)
    plan = plans[0]
    docs = [Doc(f"shop:shop.jsonl#{i}", "shop", {}, plan, judged=t) for i, t in
            enumerate([product(1)["description"], "a few words only here", product(3)["description"]], 1)]
    [batch] = list(FilterWords(at, ready.filters)(batched(docs, 5)))
    ledger.close()
    assert batch.keep.tolist() == [True, False, True]
    assert counts["shop"]["rejected"] == 1
    [ev] = _events(tmp_path)
    assert (ev["id"], ev["reason"], ev["stage"]) == ("shop:shop.jsonl#2", "too_short", "filter")
    assert [len(b.docs) for b in batched(docs, 2)] == [2, 1]


def test_local_prefix_numbers_become_one_global_order():
    """Two shards numbered the same file prefixes differently: the ranks agree across shards."""
    prefixes = [[["s:b.jsonl", "s:a.jsonl"]], [["s:a.jsonl", "s:c.jsonl"]]]
    ranks = global_ranks(prefixes)
    assert ranks == [{"s:a.jsonl": 0, "s:b.jsonl": 1, "s:c.jsonl": 2}]
    key0 = np.array([[0, 0, 5, 0, 1], [0, 1, 2, 0, 1]])   # b#5, a#2
    key1 = np.array([[0, 0, 1, 0, 1], [0, 1, 9, 0, 1]])   # a#1, c#9
    assert order_keys(key0, prefixes[0], ranks).tolist() == [[0, 1, 5], [0, 0, 2]]
    assert order_keys(key1, prefixes[1], ranks).tolist() == [[0, 0, 1], [0, 2, 9]]
