"""`webtune preview`: rendered examples with record ids, token counts and the loss mask, no training."""
from tests.conftest import webtune


def test_preview_shows_ids_tokens_and_mask(tmp_path):
    r = webtune("preview", "n=2", f"runs_dir={tmp_path}/runs")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stderr + r.stdout
    assert "example:products.json#1 · product_description" in out
    assert "tokens," in out and "trained" in out
    assert "<|eot_id|>" in out
    assert not (tmp_path / "runs").exists()          # nothing written
