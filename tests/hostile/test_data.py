"""The hostile corpus (tests/hostile/corpus.py) through `webtune prepare`, as a user runs it: every
input record once in ledger.jsonl, kept or rejected with a reason; nothing hangs (symlink loops under a
`**` glob), nothing grows past a memory limit (a 100,000-level JSON item), no NUL reaches the data."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import TINY_MODEL, only_run_dir
from tests.hostile.corpus import SOURCE, write_domain

# The address space a prepare of the corpus gets: the whole run (Python, torch's tokenizer, a worker)
# fits in well under it; building the 100,000-level item the old way needed more than 7 GB.
MEMORY_LIMIT = 3 << 30
READ_STEP = "parse"      # the ledger stage of a rejection made while reading a file


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    expect = write_domain(root)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "webtune", "prepare", "source=hostile", "template=hostile",
                        "runs_dir=runs", "prepare.workers=2", "mix.general.enabled=false", *TINY_MODEL],
                       cwd=root, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limited)
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run_dir(root / "runs")
    ledger = [orjson.loads(line) for line in (run / "ledger.jsonl").read_bytes().splitlines()]
    return {"expect": expect, "run": run, "ledger": ledger, "stderr": r.stderr}


def test_every_input_record_is_in_the_ledger_exactly_once_with_its_fate(corpus_run):
    ids = [e["id"] for e in corpus_run["ledger"] if e["source"] == SOURCE]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(corpus_run["expect"])
    for e in corpus_run["ledger"]:
        assert e["status"] in ("kept", "rejected"), e
        assert e["status"] == "kept" or e["reason"], e


def test_each_hostile_record_ends_as_its_reason_and_the_rest_read_normally(corpus_run):
    fates = {e["id"]: e for e in corpus_run["ledger"]}
    for rid, reason in corpus_run["expect"].items():
        e = fates[rid]
        if reason is None:     # read normally: kept, or dropped later for an ordinary reason (a duplicate)
            assert e["status"] == "kept" or e["stage"] != READ_STEP, e
        elif reason != "*":
            assert (e["status"], e["reason"]) == ("rejected", reason), e
            assert e["detail"].startswith(rid.split(":", 1)[1].split("#")[0]), e   # the detail names the file


def test_a_byte_order_mark_does_not_cost_the_first_record(corpus_run):
    fates = {e["id"]: e for e in corpus_run["ledger"]}
    for rid in ("bom_array.json#1", "bom_lines.jsonl#1", "bom_rows.csv#1", "bom_object.json#1", "packed.json.gz#1"):
        assert fates[f"{SOURCE}:{rid}"]["stage"] != READ_STEP, fates[f"{SOURCE}:{rid}"]
    for rid in ("bom_page.html#1", "bom_talk.vtt#1", "bom_talk.srt#1"):   # read; the template wants question/answer
        assert fates[f"{SOURCE}:{rid}"]["reason"] == "missing_field", fates[f"{SOURCE}:{rid}"]


def test_no_nul_reaches_the_data_and_its_removal_is_a_repair(corpus_run):
    data = corpus_run["run"] / "data"
    for name in ("examples.jsonl", "train.jsonl", "val.jsonl", "test.jsonl"):
        text = (data / name).read_bytes()
        assert b"\\u0000" not in text and b"\0" not in text, name
    fates = {e["id"]: e for e in corpus_run["ledger"]}
    for rid in ("nul.json#1", "nul.csv#1", "nul.jsonl#1"):
        assert "nul_removed" in fates[f"{SOURCE}:{rid}"].get("repairs", []), fates[f"{SOURCE}:{rid}"]


def test_what_a_folder_walk_leaves_out_is_said_once(corpus_run):
    said = [line for line in corpus_run["stderr"].splitlines() if "skipped" in line]
    assert any("link(s) leading out of the folder" in line and "linked_out.jsonl" in line for line in said), said
    assert any("of no format webtune reads" in line and "notes.txt" in line for line in said), said
    assert len(said) == len(set(said))
    assert not any("secret" in e["id"] for e in corpus_run["ledger"])      # the link out was not followed
