"""`webtune run -m`: one run directory per job, a summary, and prepare done once."""
import json

import pytest

from tests.conftest import SMALL, webtune


@pytest.mark.timeout(900)   # two whole runs; 300 s was hit on a loaded 2-core machine
def test_learning_rate_sweep_reuses_prepared_data_and_survives_a_failing_point(tmp_path):
    """Three points; the last one's learning rate is negative, so its training fails (the optimizer
    refuses it). The sweep does not stop there: the summary ranks the two that finished and marks
    the third failed with its error and stage, and the exit code says a point failed."""
    runs = tmp_path / "runs"
    fixed = [a for a in SMALL if not a.startswith("model.train.learning_rate=")]  # the swept key
    r = webtune("run", "-m", "model.train.learning_rate=1e-3,3e-4,-1", f"runs_dir={runs}", *fixed)
    assert r.returncode == 1, r.stderr[-3000:]
    sweeps = list((runs / "sweeps").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1", "2"]
    assert "learning_rate" in jobs[0].name
    for job in jobs[:2]:
        assert (job / "report.html").exists() and (job / "config.yaml").exists()
    second = json.loads((jobs[1] / "manifest.json").read_text())["stages"]
    assert second["prepare"]["cached"] and second["mix"]["cached"]    # prepared and packed data reused
    assert not second["train"]["cached"]                               # the knob that changed
    failed = json.loads((jobs[2] / "failed.json").read_text())
    assert failed["stage"] == "train" and "learning rate" in failed["error"].lower()
    rows = {row["job"]: row for row in json.loads((sweeps[0] / "summary.json").read_text())}
    assert sorted(rows[j]["rank"] for j in ("0", "1")) == [1, 2]
    assert rows["2"]["rank"] is None and rows["2"]["status"] == "failed"
    assert "1 of 3 points failed" in r.stderr
    html = (sweeps[0] / "summary.html").read_text()
    assert "1 of 3 points failed" in html and failed["error"] in html



def test_the_summary_ranks_by_a_named_measure_and_a_resumed_point_is_no_longer_failed(tmp_path):
    import os
    from tests.report.test_sweep_compare import make_run
    from webtune.report.sweep import FAILED, sweep_summary
    a = make_run(tmp_path, "0_lr=0.001", 5.0)
    (a / "metrics.json").write_text((a / "metrics.json").read_text().replace('"chrF": 20.0', '"chrF": 30.0'))
    make_run(tmp_path, "1_lr=0.0003", 4.0)                                  # the larger domain gain
    failed = make_run(tmp_path, "2_lr=-1", None)
    (failed / FAILED).write_text(json.dumps({"error": "ValueError: Invalid learning rate: -1", "stage": "train"}))
    assert [(r["job"], r["rank"], r["status"]) for r in sweep_summary(tmp_path)] == \
        [("1", 1, "passed"), ("0", 2, "passed"), ("2", None, "failed")]    # the gate, then domain gain
    assert [r["job"] for r in sweep_summary(tmp_path, "chrF")][:2] == ["0", "1"]   # higher chrF first
    make_run(tmp_path / "resumed", "2_lr=-1", 3.0)                         # `webtune resume` finished it later
    (failed / "metrics.json").write_bytes((tmp_path / "resumed/2_lr=-1/metrics.json").read_bytes())
    os.utime(failed / FAILED, ns=(1, 1))
    assert sweep_summary(tmp_path)[0]["job"] == "2"
