"""Local files source: JSON, JSONL, CSV (and general datasets via `datasets`), on real files."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from omegaconf import OmegaConf

from webtune.config import FilesConfig, HFConfig
from webtune.errors import WebtuneError
from webtune.records import Record, Rejection
from webtune.sources import files, general
from webtune.paths import SHIPPED

GEN_PRODUCTS = Path(__file__).resolve().parents[2] / "bench/gen/gen_products.py"


def cfg_for(*paths, **kw):
    return OmegaConf.structured(FilesConfig(paths=[str(p) for p in paths], **kw))


def read(cfg, name="src", shard=0, n_shards=1):
    return list(files.iter_records(cfg, name, files.resolve(cfg), shard, n_shards))


def by_id(items):
    return {x.id: x for x in items}


# ---------------------------------------------------------------- resolve
def test_resolve_expands_dirs_globs_files_sorted_once(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ["b/2.jsonl", "b/1.json", "a.csv", "notes.txt", "b/.hidden.jsonl"]:
        (tmp_path / name).write_text("{}\n")
    cfg = cfg_for(tmp_path / "b", tmp_path / "*.csv", tmp_path / "a.csv")
    got = files.resolve(cfg)
    assert got == sorted(got)
    assert [p.name for p in got] == ["a.csv", "1.json", "2.jsonl"]


def test_resolve_names_the_missing_path(tmp_path):
    with pytest.raises(WebtuneError, match="nope.jsonl"):
        files.resolve(cfg_for(tmp_path / "nope.jsonl"))
    with pytest.raises(WebtuneError, match=r"\*.parquet.*matches no files"):
        files.resolve(cfg_for(tmp_path / "*.parquet"))


def test_shipped_examples_resolve_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    [found] = files.resolve(cfg_for("examples/products.json"))
    assert found == SHIPPED / "examples/products.json"
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples/products.json").write_text("[]")  # the user's own file wins
    assert files.resolve(cfg_for("examples/products.json")) == [tmp_path / "examples/products.json"]


def test_resolve_refuses_a_file_it_cannot_read(tmp_path):
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(WebtuneError, match="data.xlsx.*source.files.format"):
        files.resolve(cfg_for(tmp_path / "data.xlsx"))


# ---------------------------------------------------------------- JSONL
def write_bad_jsonl(path):
    big = {"title": "big", "description": "x" * 1_000_000}
    lines = [
        b'{"title": "ok", "n": 1}',                 # 1 kept
        b'{"title": "truncated", "n"',             # 2 malformed_json
        b'{"title": "\xff\xfe broken"}',            # 3 invalid_utf8
        b'["a", "list"]',                          # 4 not_an_object
        b"",                                       # 5 blank_line: a rejection, never silently skipped
        orjson.dumps(big),                         # 6 a 1 MB record: kept
        b'{"price": "N/A", "features": "odd"}',    # 7 odd fields pass through
        b"42",                                     # 8 not_an_object
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_jsonl_bad_lines_become_rejections_naming_file_and_line(tmp_path):
    write_bad_jsonl(tmp_path / "p.jsonl")
    got = by_id(read(cfg_for(tmp_path / "p.jsonl")))
    assert sorted(got, key=lambda i: int(i.split("#")[1])) == [f"src:p.jsonl#{n}" for n in range(1, 9)]
    assert got["src:p.jsonl#5"].reason == "blank_line" and "p.jsonl line 5" in got["src:p.jsonl#5"].detail
    assert isinstance(got["src:p.jsonl#1"], Record) and got["src:p.jsonl#1"].fields == {"title": "ok", "n": 1}
    assert (got["src:p.jsonl#2"].reason, got["src:p.jsonl#3"].reason, got["src:p.jsonl#4"].reason) == \
        ("malformed_json", "invalid_utf8", "not_an_object")
    assert "p.jsonl line 3" in got["src:p.jsonl#3"].detail
    assert len(got["src:p.jsonl#6"].fields["description"]) == 1_000_000
    assert got["src:p.jsonl#7"].fields["price"] == "N/A"
    assert got["src:p.jsonl#8"].reason == "not_an_object"


def test_jsonl_record_over_the_limit_is_rejected(tmp_path):
    write_bad_jsonl(tmp_path / "p.jsonl")
    got = by_id(read(cfg_for(tmp_path / "p.jsonl", max_record_bytes=500_000)))
    assert got["src:p.jsonl#6"].reason == "too_large"
    assert "over source.files.max_record_bytes" in got["src:p.jsonl#6"].detail


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_jsonl_is_one_rejection(tmp_path, content):
    (tmp_path / "e.jsonl").write_bytes(content)
    for n_shards in (1, 3):
        got = [x for s in range(n_shards) for x in read(cfg_for(tmp_path / "e.jsonl"), shard=s, n_shards=n_shards)]
        assert [(x.id, x.reason) for x in got] == [("src:e.jsonl#1", "empty_file")]


def test_jsonl_byte_range_shards_cover_every_line_once_with_the_same_ids(tmp_path):
    path = tmp_path / "many.jsonl"
    with open(path, "wb") as fh:
        for i in range(1, 1001):
            fh.write(orjson.dumps({"i": i, "pad": "y" * (i % 97)}) + b"\n")
            if i % 250 == 0:
                fh.write(b"{broken\n")
    whole = read(cfg_for(path))
    assert len(whole) == 1004
    for n_shards in (2, 3, 7):
        parts = [read(cfg_for(path), shard=s, n_shards=n_shards) for s in range(n_shards)]
        ids = [x.id for part in parts for x in part]
        assert len(ids) == len(set(ids)) == 1004
        assert set(ids) == {x.id for x in whole}
        # each shard reads its own byte range: roughly equal parts, contiguous lines
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) < 1004 / n_shards * 0.5
    # the line number in an id is the real line in the file
    lines = path.read_bytes().split(b"\n")
    for x in read(cfg_for(path), shard=1, n_shards=2)[:50]:
        n = int(x.id.split("#")[1])
        if isinstance(x, Record):
            assert orjson.loads(lines[n - 1]) == x.fields


def test_ids_are_relative_to_the_common_parent_or_root(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.jsonl").write_text('{"x": 1}\n')
    (tmp_path / "d" / "sub" / "b.jsonl").write_text('{"x": 2}\n')
    assert [x.id for x in read(cfg_for(tmp_path / "d"))] == ["src:a.jsonl#1", "src:sub/b.jsonl#1"]
    assert [x.id for x in read(cfg_for(tmp_path / "d", root=str(tmp_path)))] == ["src:d/a.jsonl#1", "src:d/sub/b.jsonl#1"]


# ---------------------------------------------------------------- JSON
def test_json_array_items_and_bad_items(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"a": 1.5}, {"b": "\xff bad"}, 3, null, {"c": [1, 2]}]')
    got = read(cfg_for(path))
    assert [(x.id, getattr(x, "reason", "kept")) for x in got] == [
        ("src:a.json#1", "kept"), ("src:a.json#2", "invalid_utf8"), ("src:a.json#3", "not_an_object"),
        ("src:a.json#4", "not_an_object"), ("src:a.json#5", "kept")]
    assert got[0].fields == {"a": 1.5} and isinstance(got[0].fields["a"], float)


def test_truncated_json_keeps_what_was_read_and_says_where_it_broke(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('[{"a": 1}, {"a": 2}, {"a": 3')
    got = read(cfg_for(path))
    assert [x.id for x in got if isinstance(x, Record)] == ["src:t.json#1", "src:t.json#2"]
    assert got[-1].id == "src:t.json#3" and got[-1].reason == "malformed_json"
    assert "after item 2" in got[-1].detail


def test_json_object_with_array_at_key(tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"meta": {"n": 2}, "items": [{"a": 1}, {"a": 2}]}))
    got = read(cfg_for(path, json_key="items"))
    assert [(x.id, x.fields) for x in got] == [("src:o.json#1", {"a": 1}), ("src:o.json#2", {"a": 2})]
    missing = read(cfg_for(path, json_key="products"))
    assert [(x.reason, "'products'" in x.detail) for x in missing] == [("missing_json_key", True)]
    whole = read(cfg_for(path))  # no key: the object is one record
    assert [x.id for x in whole] == ["src:o.json#1"] and "items" in whole[0].fields


def test_json_empty_file_and_sharding(tmp_path):
    (tmp_path / "e.json").write_text("  \n")
    assert [(x.id, x.reason) for x in read(cfg_for(tmp_path / "e.json"))] == [("src:e.json#1", "empty_file")]
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"i": i} for i in range(1, 101)]))
    parts = [read(cfg_for(path), shard=s, n_shards=3) for s in range(3)]
    ids = [x.id for p in parts for x in p]
    assert sorted(ids) == sorted(f"src:s.json#{i}" for i in range(1, 101)) and all(len(p) >= 33 for p in parts)


def test_oversized_json_item_is_rejected(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps([{"d": "x" * 2000}, {"d": "small"}]))
    got = read(cfg_for(path, max_record_bytes=1000))
    assert [getattr(x, "reason", "kept") for x in got] == ["too_large", "kept"]


# ---------------------------------------------------------------- CSV
def test_csv_rows_lists_huge_cells_and_bad_rows(tmp_path):
    path = tmp_path / "p.csv"
    huge = "w" * 200_000  # over Python's default 131,072-character field limit
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["title", "features", "price"])
        w.writerow(["Chair", "soft | tall | blue", "12.5"])
        w.writerow(["Desk", "", "N/A"])
        w.writerow(["Huge", huge, "1"])
        w.writerow(["Short row"])
        w.writerow(["multi\nline", "a", "3"])
    with open(path, "ab") as fh:
        fh.write(b"Caf\xe9,bad byte,2\r\n")  # latin-1 byte in a UTF-8 file
    got = by_id(read(cfg_for(path, csv_list_fields=["features"])))
    assert got["src:p.csv#1"].fields == {"title": "Chair", "features": ["soft", "tall", "blue"], "price": "12.5"}
    assert got["src:p.csv#2"].fields["features"] == []
    assert got["src:p.csv#3"].fields["features"] == [huge]
    assert got["src:p.csv#4"].reason == "wrong_column_count" and "p.csv row 4" in got["src:p.csv#4"].detail
    assert got["src:p.csv#5"].fields["title"] == "multi\nline"
    assert got["src:p.csv#6"].reason == "invalid_encoding"
    assert len(got) == 6


def test_csv_delimiter_encoding_and_bom(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_bytes("name;price\nCrème brûlée;4,50\n".encode("cp1252"))
    got = read(cfg_for(path, csv_delimiter=";", encoding="cp1252"))
    assert got[0].fields == {"name": "Crème brûlée", "price": "4,50"} and got[0].id == "src:eu.csv#1"
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbftitle,n\nx,1\n")
    assert read(cfg_for(bom))[0].fields == {"title": "x", "n": "1"}
    with pytest.raises(WebtuneError, match="klingon"):
        read(cfg_for(bom, encoding="klingon"))


def test_tsv_uses_tabs(tmp_path):
    (tmp_path / "t.tsv").write_text("title\tnote\nDesk, oak\tsturdy, tall\n")
    assert read(cfg_for(tmp_path / "t.tsv"))[0].fields == {"title": "Desk, oak", "note": "sturdy, tall"}


def test_csv_header_only_and_empty(tmp_path):
    (tmp_path / "h.csv").write_text("a,b\n")
    assert read(cfg_for(tmp_path / "h.csv")) == []
    (tmp_path / "e.csv").write_text("")
    assert [x.reason for x in read(cfg_for(tmp_path / "e.csv"))] == ["empty_file"]


# ---------------------------------------------------------------- gen_products, every format
@pytest.fixture(scope="module")
def products(tmp_path_factory):
    if not GEN_PRODUCTS.exists():
        pytest.skip(f"{GEN_PRODUCTS} not found")
    out = tmp_path_factory.mktemp("products")
    n = 400
    for fmt in ("jsonl", "json", "csv"):
        args = [sys.executable, str(GEN_PRODUCTS), "--n", str(n), "--format", fmt, "--huge-every", "150",
                "--bad", "0.1", "--out", str(out / f"p.{fmt}"), "--labels", str(out / f"labels.{fmt}")]
        if fmt == "jsonl":
            args += ["--corrupt-lines", "8"]
        subprocess.run(args, check=True)
    return out


def labels(path):
    return [json.loads(line) for line in open(path)]


def test_gen_products_jsonl_every_line_accounted_for(products):
    got = read(cfg_for(products / "p.jsonl"))
    lab = labels(products / "labels.jsonl")
    corrupt = [x for x in lab if x["kind"] == "bad:corrupt_line"]
    not_records = [x for x in lab if x.get("kind") == "bad:not_a_record"]
    n_lines = sum(1 for _ in open(products / "p.jsonl", "rb"))
    assert len(got) == n_lines == 400 + len(corrupt)
    rejected = [x for x in got if isinstance(x, Rejection)]
    assert {x.id for x in rejected if x.reason in ("malformed_json", "invalid_utf8")} == \
        {f"src:p.jsonl#{c['line']}" for c in corrupt}
    # a bare JSON string or number is not a record; `null` neither
    assert sum(x.reason == "not_an_object" for x in rejected) == len(not_records)
    huge = [x for x in got if isinstance(x, Record) and len(x.fields.get("description") or "") > 500_000]
    assert len(huge) >= 2  # ~1 MB records pass


def test_gen_products_json_and_csv_agree_with_jsonl(products):
    as_json = read(cfg_for(products / "p.json"))
    assert len(as_json) == 400
    kept_json = [x for x in as_json if isinstance(x, Record)]
    kept_csv = read(cfg_for(products / "p.csv", csv_list_fields=["features", "categories"]))
    assert all(isinstance(x, Record) for x in kept_csv)
    assert len(kept_csv) == len(kept_json)  # the CSV writer drops non-object records
    by_asin = {x.fields.get("asin"): x.fields for x in kept_json if isinstance(x.fields.get("features"), list)}
    checked = 0
    for rec in kept_csv:
        orig = by_asin.get(rec.fields["asin"])
        if orig and orig["features"] and rec.fields["title"] == orig.get("title"):
            assert rec.fields["features"] == [f.strip() for f in orig["features"]]
            checked += 1
    assert checked > 100


# ---------------------------------------------------------------- general datasets
def read_general(cfg, raw_dir, shard=0, n_shards=1):
    """Acquire the rows into raw_dir (as the source cache does), then read them back."""
    paths = general.acquire(cfg, raw_dir) if not (raw_dir / "rows.jsonl.gz").exists() else [raw_dir / "rows.jsonl.gz"]
    return list(general.iter_records(cfg, "gen", paths, shard, n_shards))


def test_general_reads_local_files_and_directories(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(1, 8)]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = OmegaConf.structured(HFConfig(path=str(tmp_path / "g.jsonl")))
    (tmp_path / "raw").mkdir()
    got = read_general(cfg, tmp_path / "raw")
    assert [x.fields for x in got] == rows
    assert got[0].id == f"gen:{tmp_path / 'g.jsonl'}#1"
    shards = [read_general(cfg, tmp_path / "raw", s, 3) for s in range(3)]
    assert sorted(x.id for s in shards for x in s) == sorted(x.id for x in got)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "chat.jsonl").write_text(json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    (tmp_path / "raw2").mkdir()
    d = read_general(OmegaConf.structured(HFConfig(path=str(tmp_path / "dir"))), tmp_path / "raw2")
    assert d[0].fields["messages"][1]["content"] == "hello"


def test_general_identity_follows_the_local_data_and_the_read_settings(tmp_path):
    (tmp_path / "g.jsonl").write_text('{"q": 1}\n')
    cfg = OmegaConf.structured(HFConfig(path=str(tmp_path / "g.jsonl")))
    first = general.cache_identity(cfg)
    (tmp_path / "g.jsonl").write_text('{"q": 2}\n')
    assert general.cache_identity(cfg)["content"] != first["content"]
    cfg.split = "test"
    assert general.cache_identity(cfg)["split"] == "test"


def test_general_unknown_dataset_is_one_clear_error(tmp_path):
    # In a fresh process, so HF_HUB_OFFLINE takes effect (huggingface_hub reads it on import).
    code = ("from omegaconf import OmegaConf\nfrom webtune.config import HFConfig\nfrom webtune.sources import general\n"
            "general.acquire(OmegaConf.structured(HFConfig(path='no-such-org/no-such-set')), '.')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode != 0
    assert "WebtuneError: source.hf: cannot open dataset 'no-such-org/no-such-set'" in r.stderr
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(WebtuneError, match="x.xlsx"):
        general.acquire(OmegaConf.structured(HFConfig(path=str(tmp_path / "x.xlsx"))), tmp_path)
    (tmp_path / "broken.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(WebtuneError, match="broken.jsonl"):
        general.acquire(OmegaConf.structured(HFConfig(path=str(tmp_path / "broken.jsonl"))), tmp_path)


def test_social_post_template_renders_linkedin_and_reddit_rows(tmp_path):
    from tests.sources.test_html import rendered

    rows = [{"post_text": "Shipping a data pipeline is mostly about the boring parts: retries, logs, ledgers.",
             "title": None, "hashtags": ["#data", "#mlops"]},
            {"title": "How do you version datasets?", "community_name": "MachineLearning",
             "description": "We keep re-scraping the same sites and never know which snapshot trained which model."}]
    (tmp_path / "posts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    linkedin, reddit = read(cfg_for(tmp_path / "posts.jsonl"))
    got = rendered("social_post", linkedin.fields)
    assert got["linkedin_post"][1]["content"] == \
        "Write a LinkedIn post that opens with “Shipping a data pipeline is mostly about the…”, with the hashtags #data #mlops."
    assert got["linkedin_post"][2]["content"] == rows[0]["post_text"]
    assert got["reddit_post"] == "missing_field"
    got = rendered("social_post", reddit.fields)
    assert got["reddit_post"][1]["content"] == "Write a post for r/MachineLearning titled “How do you version datasets?”."
    assert got["reddit_title"][2]["content"] == rows[1]["title"]
    assert got["linkedin_post"] == "missing_field"
