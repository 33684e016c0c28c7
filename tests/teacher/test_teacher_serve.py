"""End to end on the real client path: `webtune serve`'s own app (uvicorn, the transformers engine)
serving the toy fixture model is the teacher. The toy writes noise, so what matters is the path:
the JSON Schema refused by the server and dropped, every section asked (twice when the reply does
not parse) and given its fate in the ledger, and a rerun with the server gone sending nothing."""
from __future__ import annotations

import pytest

from tests.fakes.asgi import running

from .conftest import FIXTURE_MODEL, config, examples, prepare, teacher_events, write_pages

pytestmark = pytest.mark.slow


def test_webtune_serve_of_the_fixture_model_is_a_teacher(tmp_path):
    from webtune.deploy.serve import ServeConfig, create_app
    pages = write_pages(tmp_path / "site", pages=2, sections=1)
    with running(create_app(str(FIXTURE_MODEL), tmp_path / "registry", ServeConfig(max_tokens=24))) as url:
        cfg = config(tmp_path, pages, url + "/v1", f"teacher.model={FIXTURE_MODEL.name}", "teacher.max_tokens=24",
                     "teacher.max_concurrency=2")
        stats = prepare(cfg, tmp_path / "run1")
    asked = stats["teacher"]
    events = teacher_events(tmp_path / "run1")
    assert asked["sections"] == len(events) == 4
    assert all(ev["status"] == "kept" or ev["reason"] == "teacher:unparseable" for ev in events.values())
    unparseable = asked["sections_rejected"].get("teacher:unparseable", 0)
    assert asked["requests"]["sent"] == 4 + unparseable           # an unparseable reply: asked once more
    assert asked["tokens"]["input"] > 0 and asked["tokens"]["output"] > 0   # the server's own usage counts

    again = prepare(cfg, tmp_path / "run2")                       # the server is gone: all from the cache
    assert again["teacher"]["requests"] == {"sent": 0, "cached": 4}
    assert examples(tmp_path / "run2") == examples(tmp_path / "run1")
