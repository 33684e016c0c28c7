"""`webtune run -m`: one run directory per job, a summary, and prepare done once."""
import json

import pytest

from tests.conftest import SMALL, webtune


@pytest.mark.timeout(900)   # two whole runs; 300 s was hit on a loaded 2-core machine
def test_learning_rate_sweep_reuses_prepared_data(tmp_path):
    runs = tmp_path / "runs"
    fixed = [a for a in SMALL if not a.startswith("model.train.learning_rate=")]  # the swept key
    r = webtune("run", "-m", "model.train.learning_rate=1e-3,3e-4", f"runs_dir={runs}", *fixed)
    assert r.returncode == 0, r.stderr[-3000:]
    sweeps = list((runs / "sweeps").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1"]
    assert "learning_rate" in jobs[0].name
    for job in jobs:
        assert (job / "report.html").exists() and (job / "config.yaml").exists()
    second = json.loads((jobs[1] / "manifest.json").read_text())["stages"]
    assert second["prepare"]["cached"] and second["mix"]["cached"]    # prepared and packed data reused
    assert not second["train"]["cached"]                               # the knob that changed
    summary = json.loads((sweeps[0] / "summary.json").read_text())
    assert len(summary) == 2 and (sweeps[0] / "summary.html").exists()
