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
