"""The runner on toy stages: skip when unchanged, cache by content, never trust half-written output."""
import json
from pathlib import Path

from omegaconf import OmegaConf

from webtune.ledger import LedgerWriter, fold
from webtune.runner import Runner, Stage

import pytest


def make_stages(calls: list, src: Path):
    def first(ctx):
        calls.append("first")
        (ctx.run_dir / "a.txt").write_text(src.read_text().upper() + str(ctx.cfg.knob.a))
        return {"n": 1}

    def second(ctx):
        calls.append("second")
        (ctx.run_dir / "b.txt").write_text((ctx.run_dir / "a.txt").read_text() + str(ctx.cfg.knob.b))

    return [Stage("first", first, config=["knob.a"], outputs=["a.txt"], external=lambda cfg: [src]),
            Stage("second", second, config=["knob.b"], inputs=["a.txt"], outputs=["b.txt"])]


def cfg_for(tmp_path, a=1, b=1):
    return OmegaConf.create({"runs_dir": str(tmp_path / "runs"), "knob": {"a": a, "b": b}})


def run(tmp_path, run_dir, calls, src, **knobs):
    return Runner(cfg_for(tmp_path, **knobs), run_dir, make_stages(calls, src), console=None, log=lambda m: None).run()


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "input.txt"
    p.write_text("hello")
    return p


def test_unchanged_stages_are_skipped(tmp_path, src):
    calls = []
    d = tmp_path / "run1"
    d.mkdir()
    run(tmp_path, d, calls, src)
    run(tmp_path, d, calls, src)
    assert calls == ["first", "second"]
    manifest = json.loads((d / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"first", "second"}


def test_changing_a_knob_reruns_only_what_it_touches(tmp_path, src):
    calls = []
    d = tmp_path / "run1"
    d.mkdir()
    run(tmp_path, d, calls, src)
    run(tmp_path, d, calls, src, b=2)
    assert calls == ["first", "second", "second"]
    assert (d / "b.txt").read_text() == "HELLO12"


def test_editing_an_external_file_invalidates_its_stage_and_those_after(tmp_path, src):
    calls = []
    d = tmp_path / "run1"
    d.mkdir()
    run(tmp_path, d, calls, src)
    src.write_text("changed")
    run(tmp_path, d, calls, src)
    assert calls == ["first", "second", "first", "second"]
    assert (d / "b.txt").read_text() == "CHANGED11"


def test_a_second_run_directory_is_restored_from_the_cache_by_hard_links(tmp_path, src):
    calls = []
    d1, d2 = tmp_path / "run1", tmp_path / "run2"
    d1.mkdir(), d2.mkdir()
    run(tmp_path, d1, calls, src)
    run(tmp_path, d2, calls, src)
    assert calls == ["first", "second"]
    assert (d2 / "b.txt").read_text() == "HELLO11"
    assert (d2 / "a.txt").stat().st_ino == (d1 / "a.txt").stat().st_ino   # linked, not copied
    assert json.loads((d2 / "manifest.json").read_text())["stages"]["first"]["cached"] is True


def test_a_half_written_output_is_never_taken_for_a_finished_one(tmp_path, src):
    calls = []
    d = tmp_path / "run1"
    d.mkdir()
    run(tmp_path, d, calls, src)
    (d / "b.txt").unlink()
    (d / "b.txt").write_text("HELL")               # a killed stage left a truncated file
    run(tmp_path, d, calls, src)
    assert calls == ["first", "second"]            # restored from the intact cache, not trusted as is
    assert (d / "b.txt").read_text() == "HELLO11"


def test_outputs_are_read_only_and_a_modified_cache_entry_is_discarded(tmp_path, src):
    calls = []
    d = tmp_path / "run1"
    d.mkdir()
    run(tmp_path, d, calls, src)
    assert (d / "b.txt").stat().st_mode & 0o222 == 0   # an in-place edit would reach the cache via the link
    cached = next((tmp_path / "runs/.cache/second").iterdir()) / "b.txt"
    cached.chmod(0o644)
    cached.write_text("corrupted")
    d2 = tmp_path / "run2"
    d2.mkdir()
    run(tmp_path, d2, calls, src)
    assert calls == ["first", "second", "second"]
    assert (d2 / "b.txt").read_text() == "HELLO11"


def test_ledger_folds_to_one_line_per_record_and_reconciles(tmp_path):
    with LedgerWriter(tmp_path, "prepare", part="0") as w:
        w.kept("s:f#1", "s", example_ids=["s:f#1/t"])
        w.repaired("s:f#2", "s", "html_stripped", step="clean")
        w.kept("s:f#2", "s")
        w.rejected("s:f#3", "s", "exact_duplicate", duplicate_of="s:f#1", step="dedupe")
    with LedgerWriter(tmp_path, "mix") as w:
        w.rejected("s:f#2", "s", "too_long", step="pack")
    counts = fold(tmp_path, ["prepare", "mix"])
    lines = [json.loads(x) for x in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    by_id = {x["id"]: x for x in lines}
    assert len(lines) == 3
    assert by_id["s:f#2"]["status"] == "rejected" and by_id["s:f#2"]["repairs"] == ["html_stripped"]
    assert by_id["s:f#3"]["duplicate_of"] == "s:f#1"
    assert counts["sources"]["s"] == {"in": 3, "kept": 1, "rejected": 2}


# ---------------------------------------------------------------- the independent count (issue 16)
JSONL_RECORDS = 5
JSON_COMPLETE = 4


def write_counted_inputs(folder: Path) -> None:
    """A JSONL file of 5 records and 3 blank lines (8 lines), and a JSON array cut inside item 5."""
    folder.mkdir(parents=True)
    rec = lambda i: json.dumps({"title": f"Steel bottle {i}", "description": f"Keeps water cold, model {i} " * 8})  # noqa: E731
    lines = [rec(1), "", rec(2), rec(3), "", "", rec(4), rec(5)]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    items = ",".join(rec(i) for i in range(10, 10 + JSON_COMPLETE))
    (folder / "b.json").write_text(f"[{items},{rec(99)[:40]}")


@pytest.fixture
def counted_run(tmp_path):
    from rich.console import Console
    from tests.conftest import TINY_MODEL
    from webtune.hydra_setup import validate_overrides
    from webtune.rundir import new_run_dir
    from webtune.stages import build_stages

    write_counted_inputs(tmp_path / "in")
    cfg = validate_overrides([f"runs_dir={tmp_path / 'runs'}", *TINY_MODEL, "prepare.workers=1", "source=files",
                              f"source.files.paths=[{tmp_path / 'in'}]", "source.name=shop",
                              "mix.general.enabled=false"])
    run_dir = new_run_dir(tmp_path / "runs", "counted")
    Runner(cfg, run_dir, build_stages(), Console(quiet=True), log=lambda m: None).run(
        only={"source", "prepare", "ledger"})
    return run_dir


def test_ledger_counts_match_what_the_files_hold(counted_run):
    lines = [json.loads(x) for x in (counted_run / "ledger.jsonl").read_text().splitlines()]
    ids = {x["id"]: x for x in lines}
    assert sorted(i for i in ids if "a.jsonl" in i) == sorted(f"shop:a.jsonl#{n}" for n in range(1, 9))
    assert [n for n in range(1, 9) if ids[f"shop:a.jsonl#{n}"]["reason"] == "blank_line"] == [2, 5, 6]
    assert sorted(i for i in ids if "b.json#" in i) == sorted(f"shop:b.json#{n}" for n in range(1, JSON_COMPLETE + 2))
    broken = ids[f"shop:b.json#{JSON_COMPLETE + 1}"]
    stop = (counted_run / "data/raw/shop/b.json").read_bytes().rindex(b'"')  # the unterminated string
    assert broken["reason"] == "malformed_json" and f"at byte {stop:,}" in broken["detail"]
    files = json.loads((counted_run / "stats/ledger.json").read_text())["files"]
    assert files == {"shop:a.jsonl": {"unit": "lines", "read": 8, "ledger": 8},
                     "shop:b.json": {"unit": "items", "read": JSON_COMPLETE + 1, "ledger": JSON_COMPLETE + 1}}


def test_a_record_dropped_without_an_event_fails_the_ledger(counted_run):
    from webtune.errors import WebtuneError
    from webtune.stages import LEDGER_STAGES
    parts = sorted((counted_run / "ledger/prepare").glob("*.jsonl"))
    events = [line for p in parts for line in p.read_text().splitlines()]
    kept = [e for e in events if json.loads(e)["id"] != "shop:a.jsonl#3"]
    assert len(kept) < len(events)
    for p in parts:
        p.unlink()
    (counted_run / "ledger/prepare/0.jsonl").write_text("".join(e + "\n" for e in kept))
    counts = json.loads((counted_run / "data/raw/sources.json").read_text())["domain"]["counts"]
    with pytest.raises(WebtuneError, match=r"shop:a.jsonl: the source read 8 lines, the ledger has 7 .*missing #3"):
        fold(counted_run, LEDGER_STAGES, read=counts)


def test_page_sections_fold_into_the_page_line(tmp_path):
    with LedgerWriter(tmp_path, "prepare", part="0") as w:
        w.rejected("d:p.html#1/s1", "d", "too_short", step="filter")
        w.kept("d:p.html#1/s2", "d", example_ids=["d:p.html#1/s2/qa"])
        w.rejected("d:q.html#1/s1", "d", "too_short", step="filter")
        w.rejected("d:q.html#1/s2", "d", "near_duplicate", step="dedupe")
    read = {"d:p.html": {"unit": "pages", "n": 1}, "d:q.html": {"unit": "pages", "n": 1}}
    counts = fold(tmp_path, ["prepare"], read=read)
    lines = {x["id"]: x for x in map(json.loads, (tmp_path / "ledger.jsonl").read_text().splitlines())}
    assert set(lines) == {"d:p.html#1", "d:q.html#1"}
    assert lines["d:p.html#1"]["status"] == "kept" and lines["d:p.html#1"]["example_ids"] == ["d:p.html#1/s2/qa"]
    assert [s["status"] for s in lines["d:p.html#1"]["sections"]] == ["rejected", "kept"]
    assert lines["d:q.html#1"]["status"] == "rejected"
    assert [s["reason"] for s in lines["d:q.html#1"]["sections"]] == ["too_short", "near_duplicate"]
    assert counts["sources"]["d"] == {"in": 2, "kept": 1, "rejected": 1}
