"""The thresholds in `eval` flag a regression and set `status`/`passed` (the registry's promote gate reads them);
without loss or judge evidence a run is "unverified" (fails closed)."""
from omegaconf import OmegaConf

from webtune.config import EvalConfig
from webtune.evaluate.stage import verdict


def scores(base_domain, tuned_domain, base_general=None, tuned_general=None):
    out = {"base": {"domain": {"loss": base_domain}}, "tuned": {"domain": {"loss": tuned_domain}}}
    if base_general is not None:
        out["base"]["general"] = {"loss": base_general}
        out["tuned"]["general"] = {"loss": tuned_general}
    return out


def cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(EvalConfig), kw)


def test_a_domain_gain_within_the_general_threshold_passes():
    v = verdict(cfg(max_general_regression=0.5, min_domain_gain=0.1), scores(3.0, 2.0, 2.5, 2.9))
    assert v == {"domain_gain": 1.0, "general_change": 0.4, "flags": [], "status": "passed", "passed": True}


def test_a_general_regression_above_the_threshold_is_flagged():
    v = verdict(cfg(max_general_regression=0.5), scores(3.0, 2.0, 2.5, 3.1))
    assert not v["passed"] and v["flags"] == ["general loss rose by 0.600 nats, above eval.max_general_regression=0.5"]


def test_too_small_a_domain_gain_is_flagged():
    v = verdict(cfg(min_domain_gain=0.5), scores(3.0, 2.8, 2.5, 2.5))
    assert not v["passed"] and "domain loss gain 0.200 is below eval.min_domain_gain=0.5" in v["flags"][0]


def test_without_a_general_test_set_only_the_domain_is_judged():
    v = verdict(cfg(), scores(3.0, 2.0))
    assert v["general_change"] is None and v["passed"]


def test_without_losses_or_a_judge_the_run_is_unverified_and_does_not_pass():   # an API-tuned model
    v = verdict(cfg(), {"base": {"model": "a"}, "tuned": {"model": "b"}})
    assert v == {"domain_gain": None, "general_change": None, "flags": [], "status": "unverified", "passed": False}


def test_without_losses_the_judge_decides():
    api = {"base": {"model": "a"}, "tuned": {"model": "b"}}
    assert verdict(cfg(), api, {"win_rate": 0.75})["status"] == "passed"
    lost = verdict(cfg(), api, {"win_rate": 0.25})
    assert lost["status"] == "failed" and "25% of pairs" in lost["flags"][0]
