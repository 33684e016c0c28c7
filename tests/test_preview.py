"""`webtune preview`: rendered examples with record ids, token counts and the loss mask, no training.

Preview reads the same content-addressed source snapshot a run uses (runs/.cache/source/<key>/):
it makes no run directory, and a later run of the same source acquires nothing again."""
import json
import re
from pathlib import Path

from tests.conftest import TINY_MODEL, webtune


def test_preview_shows_ids_tokens_and_mask(tmp_path):
    r = webtune("preview", "n=2", f"runs_dir={tmp_path}/runs", *TINY_MODEL)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout                                    # the examples go to stdout (pipe them, page them)
    assert "example:products.json#" in out and " · product_description" in out
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


def preview_out(capsys, *args) -> str:
    from webtune.preview import preview
    assert preview(list(args)) == 0
    return capsys.readouterr().out


def shown_ids(out: str) -> list[str]:
    return re.findall(r"─ (\S+#\S+) · ", out)


def test_preview_samples_with_a_seed(tmp_path, capsys):
    common = [f"runs_dir={tmp_path}/runs", *TINY_MODEL]
    first = shown_ids(preview_out(capsys, "n=3", "seed=1", *common))
    assert len(first) == 3 and first == shown_ids(preview_out(capsys, "n=3", "seed=1", *common))  # same seed, same records
    assert first != ["example:products.json#1", "example:products.json#2", "example:products.json#3"]  # not the head
    assert shown_ids(preview_out(capsys, "ids=example:products.json#7,example:products.json#2", *common)) == [
        "example:products.json#2", "example:products.json#7"]


def test_preview_summarises_rejections_and_how_pages_were_cut(tmp_path, capsys):
    pages = tmp_path / "site"
    pages.mkdir()
    fixtures = Path(__file__).parent / "fixtures/pages"
    for name in ("sqlite_deterministic.html", "plain_lists.html"):
        (pages / name).write_bytes((fixtures / name).read_bytes())
    (pages / "flat.html").write_text("<html><head><title>Flat</title></head><body><article>"
                                     + "<p>Backups run every hour and are kept for two days by default here.</p>" * 40
                                     + "</article></body></html>")
    (pages / "empty.html").write_text("<html><body><script>var a = 1;</script></body></html>")
    out = preview_out(capsys, "n=50", "source=docs_pages", f"source.files.paths=[{pages}/*.html]", "template=docs_qa",
                      f"runs_dir={tmp_path}/runs", *TINY_MODEL)
    assert "docs:sqlite_deterministic.html#1/s2 · docs_answer · 2/" in out and " at headings" in out
    assert out.count("no_main_content") == 1                       # summarised once, not per record
    assert "rejected by the source: 1 no_main_content" in out
    assert re.search(r"pages read: 3, \d+ section\(s\); 2 cut at their headings, 1 cut by size only", out)
    assert "docs:flat.html#1" in out.split("cut by size only")[1]
