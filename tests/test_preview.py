"""`webtune preview`: rendered examples with record ids, token counts and the loss mask, no training.

Preview reads the same content-addressed source snapshot a run uses (runs/.cache/source/<key>/):
it makes no run directory, and a later run of the same source acquires nothing again."""
import json

from tests.conftest import TINY_MODEL, webtune


def test_preview_shows_ids_tokens_and_mask(tmp_path):
    r = webtune("preview", "n=2", f"runs_dir={tmp_path}/runs", *TINY_MODEL)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stderr + r.stdout
    assert "example:products.json#1 · product_description" in out
    assert "tokens," in out and "trained" in out
    assert "<|eot_id|>" in out                        # the fixture model's end-of-turn token, shown
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [".cache"]   # no run directory
    assert [p.name for p in (tmp_path / "runs" / ".cache").iterdir()] == ["source"]


def test_preview_then_prepare_share_one_snapshot(tmp_path):
    runs = tmp_path / "runs"
    assert webtune("preview", "n=1", f"runs_dir={runs}", *TINY_MODEL).returncode == 0
    [entry] = [p for p in (runs / ".cache" / "source").iterdir() if p.is_dir()]
    made = (entry / ".complete").stat().st_mtime_ns
    r = webtune("prepare", f"runs_dir={runs}", "prepare.workers=1", *TINY_MODEL)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (entry / ".complete").stat().st_mtime_ns == made        # reused, not filled again
    entries = [entry.name]
    run_dir = next(p for p in runs.iterdir() if p.name[:4].isdigit())
    found = json.loads((run_dir / "data/raw/sources.json").read_text())
    assert found["domain"]["snapshot"] in entries
    raw = run_dir / found["domain"]["paths"][0]
    cached = runs / ".cache/source" / found["domain"]["snapshot"] / "data" / "products.json"
    assert raw.stat().st_ino == cached.stat().st_ino   # hard-linked, not acquired again
