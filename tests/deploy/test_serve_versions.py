"""`webtune serve NAME` serves every registered version under its own id (`NAME@vN`) beside NAME,
which follows the promoted one; on the transformers engine here (test_vllm.py: the same on vLLM)."""
import httpx

from tests.deploy.test_vllm import HELD_OUT, greedy, make_version
from tests.fakes.asgi import running
from webtune.deploy import registry as reg
from webtune.deploy.generate import load_model
from webtune.deploy.serve import ServeConfig, create_app


def test_every_version_by_its_own_id(tmp_path):
    for seed in (1, 2):
        reg.register(tmp_path / "registry", "shop", make_version(tmp_path / f"run{seed}", seed))
    reg.promote(tmp_path / "registry", "shop", 1, force=True)
    local = {v: load_model(tmp_path / "registry" / "shop" / f"v{v}" / "model") for v in (1, 2)}
    with running(create_app("shop", tmp_path / "registry", ServeConfig())) as url:
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["shop", "shop@v1", "shop@v2"]
        for model, v in (("shop", 1), ("shop@v2", 2), ("shop@v1", 1)):
            r = httpx.post(url + "/v1/chat/completions", timeout=120, json={
                "model": model, "messages": HELD_OUT[0], "max_tokens": 12, "temperature": 0}).json()
            assert r["choices"][0]["message"]["content"] == greedy(local[v], HELD_OUT[0], 12)
            assert r["system_fingerprint"] == f"shop@v{v}"
        assert httpx.get(url + "/v1/models/shop@v3").status_code == 404
