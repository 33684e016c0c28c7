"""The whole stage on real JSONL files through the files source: ledger, examples, dedupe, shards."""
import pytest
from omegaconf import OmegaConf

from webtune.errors import WebtuneError
from webtune.ledger import fold
from webtune.prepare import PrepareInput, run
from webtune.sources import iter_records

from .conftest import (domain_input, finals, general_template, prepare_cfg, product, read_jsonl, source,
                       words, write_jsonl)


def near_copy(rec: dict, every: int = 40) -> dict:
    ws = rec["description"].split()
    for i in range(0, len(ws), every):
        ws[i] = "zzzq"
    return {**rec, "description": " ".join(ws), "title": rec["title"] + " (2-Pack)"}


@pytest.fixture
def shop(tmp_path):
    """A small shop file with one of each case, and the line numbers of the interesting ones."""
    recs = [product(i) for i in range(40)]
    recs[3] = product(3, description="<div><p>" + recs[3]["description"] + "</p><script>x()</script></div>")
    recs[5] = product(5, description=recs[5]["description"] + " Caf\u00c3\u00a9 quality.")
    recs[7] = product(7, final_price="N/A", features="one string")
    recs[9] = {k: v for k, v in product(9).items() if k != "brand"}
    recs[11] = product(11, description={"text": "an object", "lang": "en"})
    recs[13] = dict(recs[1])                 # exact copy of line 2
    recs[15] = near_copy(recs[2])            # near copy of line 3
    recs[17] = product(17, description="Too short.")
    recs[19] = {"error": "Scrape failed: dead_page", "error_code": "dead_page", "input": {"url": "u"}}
    items = recs[:21] + [b"[1, 2]", b'{"title": "broken'] + recs[21:]
    return write_jsonl(tmp_path / "data" / "shop.jsonl", items)


def test_every_record_gets_one_fate_and_examples_are_rendered(tmp_path, shop, templates):
    cfg = prepare_cfg(min_words=5, length_field="description")
    run_dir = tmp_path / "run"
    stats = run(cfg, run_dir, [domain_input(shop, templates)])
    fate = finals(run_dir)
    assert len(fate) == 42
    line = lambda n: fate[f"shop:shop.jsonl#{n}"]  # noqa: E731
    assert (line(10)["reason"], line(10)["stage"]) == ("missing_field", "render")
    assert line(10)["detail"] == "template product_description needs 'brand'"
    assert (line(12)["reason"], line(12)["stage"]) == ("schema_invalid", "validate")
    assert "'description'" in line(12)["detail"]
    assert (line(14)["reason"], line(14)["duplicate_of"]) == ("exact_duplicate", "shop:shop.jsonl#2")
    assert (line(16)["reason"], line(16)["duplicate_of"]) == ("near_duplicate", "shop:shop.jsonl#3")
    assert line(18)["reason"] == "too_short" and line(20)["reason"] == "error_record"
    assert line(22)["reason"] == "not_an_object" and line(23)["reason"] == "malformed_json"
    for n in (4, 6, 8):
        assert line(n)["status"] == "kept" and line(n)["example_ids"] == [f"shop:shop.jsonl#{n}/product_description"]
    repairs = {(e["id"].split("#")[1], e["reason"]) for e in _events(run_dir) if e["status"] == "repaired"}
    assert {("4", "html_stripped"), ("6", "mojibake_fixed"), ("8", "coerced:final_price"),
            ("8", "coerced:features")} <= repairs

    examples = read_jsonl(run_dir / "data" / "examples.jsonl")
    kept = [rid for rid, ev in fate.items() if ev["status"] == "kept"]
    assert [e["record_id"] for e in examples] == sorted(kept, key=lambda r: int(r.split("#")[1]))  # input order
    first = examples[0]
    assert set(first) == {"id", "record_id", "source", "side", "template", "group", "messages"}
    assert (first["id"], first["side"], first["group"]) == ("shop:shop.jsonl#1/product_description", "domain",
                                                           "shop:shop.jsonl#1")
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    html = next(e for e in examples if e["record_id"].endswith("#4"))["messages"][2]["content"]
    assert "<" not in html and "x()" not in html

    assert stats["sources"]["shop"] == {"side": "domain", "in": 42, "kept": len(kept), "rejected": 42 - len(kept)}
    assert stats["examples"] == {"product_description": len(kept)} and stats["duplicates"] == 2
    counts = fold(run_dir, ["prepare"])  # the runner's reconciliation agrees
    assert counts["sources"]["shop"] == {"in": 42, "kept": len(kept), "rejected": 42 - len(kept)}


def _events(run_dir):
    out = []
    for part in sorted((run_dir / "ledger" / "prepare").glob("*.jsonl")):
        out += read_jsonl(part)
    return out


def test_dedupe_across_domain_and_general(tmp_path, templates):
    text = words(77, 150)
    shop = write_jsonl(tmp_path / "shop" / "shop.jsonl", [product(1), product(2, description=text)])
    general = write_jsonl(tmp_path / "general" / "train.jsonl", [
        {"messages": [{"role": "user", "content": "Describe it."}, {"role": "assistant", "content": text}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": words(78, 30)}]}])
    cfg = prepare_cfg()
    cfg.prepare.dedupe.fields = ["description", "messages"]
    inputs = [domain_input(shop, templates),
              PrepareInput("general", source("general", general), general_template(), [general], iter_records)]
    stats = run(cfg, tmp_path / "run", inputs)
    fate = finals(tmp_path / "run")
    dup = fate["general:train.jsonl#1"]
    assert (dup["status"], dup["reason"], dup["duplicate_of"]) == ("rejected", "near_duplicate", "shop:shop.jsonl#2")
    assert fate["general:train.jsonl#2"]["status"] == "kept"
    examples = read_jsonl(tmp_path / "run" / "data" / "examples.jsonl")
    assert [(e["side"], e["template"]) for e in examples] == [("domain", "product_description")] * 2 + [
        ("general", "general_chat")]
    assert examples[2]["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": words(78, 30)}]
    assert stats["sources"]["general"] == {"side": "general", "in": 2, "kept": 1, "rejected": 1}


def test_one_source_feeds_several_tasks(tmp_path, templates):
    from webtune.config import TaskConfig, TemplateConfig, TurnConfig
    path = write_jsonl(tmp_path / "d" / "shop.jsonl", [product(1), product(2, rating=None)])
    cfg_t = OmegaConf.structured(TemplateConfig(name="shop", tasks=[
        TaskConfig(name="describe", user=str(templates / "user.j2"), assistant=str(templates / "assistant.j2"),
                   fields=["title", "brand", "description"]),
        TaskConfig(name="rating", turns=[TurnConfig(role="user", text="Rating of {{ title }}?"),
                                         TurnConfig(role="assistant", text="{{ rating }} stars")],
                   fields=["rating"])]))
    cfg = prepare_cfg()
    cfg.prepare.dedupe.fields = ["description"]
    stats = run(cfg, tmp_path / "run", [PrepareInput("domain", source("shop", path), cfg_t, [path], iter_records)])
    examples = read_jsonl(tmp_path / "run" / "data" / "examples.jsonl")
    assert [e["id"] for e in examples] == ["shop:shop.jsonl#1/describe", "shop:shop.jsonl#1/rating",
                                           "shop:shop.jsonl#2/describe"]
    second = finals(tmp_path / "run")["shop:shop.jsonl#2"]
    assert second["status"] == "kept" and second["example_ids"] == ["shop:shop.jsonl#2/describe"]
    assert "template rating needs 'rating'" in second["detail"]
    assert stats["examples"] == {"describe": 2, "rating": 1}


def test_group_field_sets_the_split_group(tmp_path, templates):
    path = write_jsonl(tmp_path / "d" / "shop.jsonl", [product(1, sku="A"), product(2, sku="A"), product(3)])
    inp = PrepareInput("domain", source("shop", path, group_field="sku"), _template(templates), [path], iter_records)
    run(prepare_cfg(), tmp_path / "run", [inp])
    groups = [e["group"] for e in read_jsonl(tmp_path / "run" / "data" / "examples.jsonl")]
    assert groups == ["A", "A", "shop:shop.jsonl#3"]


def _template(folder):
    from .conftest import product_template
    return product_template(folder)


def test_template_syntax_error_stops_before_any_record(tmp_path, shop, templates):
    (templates / "assistant.j2").write_text("{{ description }\n")
    with pytest.raises(WebtuneError, match=r"assistant\.j2:1: template syntax error"):
        run(prepare_cfg(), tmp_path / "run", [domain_input(shop, templates)])
    assert not (tmp_path / "run" / "data" / "examples.jsonl").exists()


def test_two_workers_give_the_same_output_as_one(tmp_path, templates):
    recs, copies = [], []
    for i in range(300):
        recs.append(product(i))
        if i % 10 == 3:
            recs.append(product(i // 2))             # exact copies of earlier records, across shard borders
            copies.append(f"shop:shop.jsonl#{len(recs)}")
        if i % 10 == 7:
            recs.append(near_copy(product(i // 3), every=100))   # one word in 60: Jaccard ~0.9
    path = write_jsonl(tmp_path / "d" / "shop.jsonl", recs)
    outs = []
    for workers in (1, 2):
        run_dir = tmp_path / f"run{workers}"
        cfg = prepare_cfg(workers=workers)
        cfg.prepare.dedupe.fields = ["description"]
        stats = run(cfg, run_dir, [domain_input(path, templates)])
        assert stats["workers"] == workers
        outs.append(((run_dir / "data" / "examples.jsonl").read_bytes(), finals(run_dir)))
    assert outs[0][0] == outs[1][0]
    assert outs[0][1] == outs[1][1]
    fate = outs[0][1]
    assert all(fate[rid]["reason"] == "exact_duplicate" for rid in copies)
    assert sum(ev["reason"] == "near_duplicate" for ev in fate.values()) == 30


def test_round_robin_source_is_merged_in_input_order(tmp_path, templates):
    """A JSON array is dealt out item by item: the shards' outputs interleave and must be merged."""
    import json

    from webtune.config import FilesConfig, SourceConfig
    from .conftest import product_template
    recs = [product(i) for i in range(30)] + [product(4), product(11)]
    path = tmp_path / "d" / "shop.json"
    path.parent.mkdir()
    path.write_text(json.dumps(recs))
    src = OmegaConf.structured(SourceConfig(name="shop", files=FilesConfig(paths=[str(path)], format="json")))
    outs = []
    for workers in (1, 2):
        run_dir = tmp_path / f"run{workers}"
        run(prepare_cfg(workers=workers), run_dir, [PrepareInput("domain", src, product_template(templates), [path], iter_records)])
        outs.append((run_dir / "data" / "examples.jsonl").read_bytes())
        fate = finals(run_dir)
        assert fate["shop:shop.json#32"]["duplicate_of"] == "shop:shop.json#12"
    assert outs[0] == outs[1]
    ids = [e["record_id"] for e in read_jsonl(tmp_path / "run2" / "data" / "examples.jsonl")]
    assert ids == [f"shop:shop.json#{i}" for i in range(1, 31)]


def test_shipped_template_loads_and_pii_is_masked(tmp_path):
    """conf/template/product_description.yaml with its repo-relative files, and PII masking as a repair."""
    from webtune.config import TemplateConfig
    from webtune.paths import SHIPPED
    from webtune.prepare import template_files
    shipped = OmegaConf.merge(OmegaConf.structured(TemplateConfig),
                              OmegaConf.load(SHIPPED / "conf" / "template" / "product_description.yaml"))
    assert {p.name for p in template_files(shipped)} == {"user.j2", "assistant.j2", "input.schema.json"}
    path = write_jsonl(tmp_path / "d" / "shop.jsonl", [product(1, description=words(1, 40) + " mail me at a.b@example.com")])
    cfg = prepare_cfg(mask_pii=True)
    run(cfg, tmp_path / "run", [PrepareInput("domain", source("shop", path), shipped, [path], iter_records)])
    example = read_jsonl(tmp_path / "run" / "data" / "examples.jsonl")[0]
    assert example["messages"][-1]["content"].endswith("mail me at [EMAIL]")
    repairs = [e for e in _events(tmp_path / "run") if e["status"] == "repaired"]
    assert [(e["reason"], e["detail"]) for e in repairs] == [("pii_masked", "description")]
