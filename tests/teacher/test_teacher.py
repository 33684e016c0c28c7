"""The teacher against a fake OpenAI-compatible server of our own (tests/fakes/teacher_server.py):
questions per section, the cache (a rerun, an edited section, a crash), rate limits, unparseable
replies, caps, duplicates, the judge, and the same bytes for any number of workers."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from webtune.errors import WebtuneError

from .conftest import FIXTURE_MODEL, config, examples, prepare, teacher_events, write_pages

REPO = Path(__file__).resolve().parents[2]


def sections_of(run_dir: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for ex in examples(run_dir):
        out.setdefault(ex["record_id"], []).append(ex)
    return out


def render_report(cfg, run_dir: Path, stats: dict) -> str:
    from webtune.fileio import write_json
    from webtune.report import stage
    write_json(run_dir / "stats" / "prepare.json", stats)
    stage.run(cfg, run_dir)
    return (run_dir / "report.html").read_text()


def test_every_section_gets_its_n_questions_once_and_the_page_stays_the_answer(tmp_path, pages, fake):
    cfg = config(tmp_path, pages, fake.base_url)
    stats = prepare(cfg, tmp_path / "run1")
    events = teacher_events(tmp_path / "run1")
    per_section = sections_of(tmp_path / "run1")
    assert fake.answered == fake.requests == len(events) == len(per_section) == stats["teacher"]["sections"] == 16
    for rid, exs in per_section.items():
        assert [ex["id"] for ex in exs] == [f"{rid}/docs_answer/q{k}" for k in (1, 2, 3)]
        assert len({ex["messages"][1]["content"] for ex in exs}) == 3                 # three different questions
        assert len({ex["messages"][2]["content"] for ex in exs}) == 1                 # one target: the section
        assert exs[0]["messages"][2]["content"] in fake.prompts()[0] or any(
            exs[0]["messages"][2]["content"] in p for p in fake.prompts())            # sent verbatim, once
        assert events[rid]["status"] == "kept" and events[rid]["example_ids"] == [ex["id"] for ex in exs]
        assert [q["status"] for q in events[rid]["questions"]] == ["kept"] * 3
    # one call per section, never one per question; the schema asked for where the server takes it
    assert all(b["response_format"]["json_schema"]["schema"]["properties"]["questions"]["maxItems"] == 3
               for b in fake.bodies)
    assert stats["teacher"]["requests"] == {"sent": 16, "cached": 0}
    report = render_report(cfg, tmp_path / "run1", stats)           # a sample of questions per page, counts, cost
    first = next(iter(per_section.values()))[0]
    assert "grounded by construction" in report and first["messages"][1]["content"] in report

    # a rerun, a sweep point, reproduce: all cached, and the same bytes for any number of workers
    again = prepare(config(tmp_path, pages, fake.base_url, "prepare.workers=2"), tmp_path / "run2")
    assert fake.requests == 16 and again["teacher"]["requests"] == {"sent": 0, "cached": 16}
    for name in ("data/examples.jsonl", "ledger/prepare/teacher.jsonl"):
        assert (tmp_path / "run2" / name).read_bytes() == (tmp_path / "run1" / name).read_bytes()

    page = pages / "encoder1.html"                                 # one section edited: only it is asked again
    page.write_text(page.read_text().replace("stays", "remains", 1))
    prepare(cfg, tmp_path / "run3")
    assert fake.requests == 17


def test_reproduce_reads_the_replies_the_run_recorded_and_asks_nothing_even_without_the_cache(tmp_path, pages, fake):
    from webtune.commands import DATA_STAGES, execute
    from webtune.reproduce import reproduce
    runs = tmp_path / "runs"
    run = runs / "run"
    run.mkdir(parents=True)
    execute(config(tmp_path, pages, fake.base_url, f"model.name_or_path={FIXTURE_MODEL}"), run, fresh=True,
            only=DATA_STAGES)
    record = run / "data/teacher_replies.jsonl"
    assert fake.requests == 16 and len(record.read_bytes().splitlines()) == 16
    shutil.rmtree(runs / ".cache")                  # the teacher cache (and the stage cache) gone
    assert reproduce(run, data_only=True) == 0       # every data file identical
    assert fake.requests == 16                       # nothing asked: the replies came from the run itself

    lines = record.read_bytes().splitlines()         # an edited reply is named, and changes the data
    record.chmod(0o644)
    record.write_bytes(b"\n".join([lines[0].replace(b"option", b"choice", 1)] + lines[1:]) + b"\n")
    assert reproduce(run, data_only=True) == 1 and fake.requests == 16


def test_a_crash_after_half_the_sections_resumes_with_the_other_half(tmp_path, pages, fake):
    fake.hold_after = 8                 # 8 replies come back, then the server stalls and the process is killed
    script = (f"from tests.teacher.conftest import config, prepare; from pathlib import Path; "
              f"prepare(config(Path({str(tmp_path)!r}), Path({str(pages)!r}), {fake.base_url!r}, "
              f"'teacher.max_concurrency=2'), Path({str(tmp_path / 'run1')!r}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while fake.requests < 10 and proc.poll() is None and time.monotonic() < deadline:   # 8 answered + 2 held
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fake.release()
    assert fake.answered == 8 and fake.requests == 10, proc.stderr.read().decode()[-2000:]

    fake.hold_after = None
    stats = prepare(config(tmp_path, pages, fake.base_url), tmp_path / "run2")
    assert stats["teacher"]["requests"] == {"sent": 8, "cached": 8}
    assert len(sections_of(tmp_path / "run2")) == 16


def test_a_429_storm_is_waited_out_no_row_is_lost_and_a_refused_response_format_is_dropped(tmp_path, pages, fake):
    fake.storm(6)
    fake.refuse_format = True          # as `webtune serve` and llama.cpp answer: the plain reply is parsed
    stats = prepare(config(tmp_path, pages, fake.base_url, "teacher.max_concurrency=1"), tmp_path / "run")
    assert fake.requests == 16 + 6 + 1 and fake.answered == 16
    assert stats["teacher"]["sections_kept"] == 16 and len(examples(tmp_path / "run")) == 48
    assert not any("response_format" in b for b in fake.bodies)


def test_a_storm_longer_than_the_retries_stops_the_run_and_a_rerun_goes_on(tmp_path, pages, fake):
    fake.storm(100)
    with pytest.raises(WebtuneError, match="still refused after 1 retries"):
        prepare(config(tmp_path, pages, fake.base_url, "teacher.max_retries=1", "teacher.max_concurrency=1"),
                tmp_path / "run1")
    assert fake.answered == 0
    fake.storm(0)
    stats = prepare(config(tmp_path, pages, fake.base_url), tmp_path / "run2")
    assert stats["teacher"]["sections_kept"] == 16


def test_an_unparseable_reply_is_asked_once_more_then_rejected(tmp_path, fake):
    pages = write_pages(tmp_path / "site", extra={(2, 1): "The zebra knob is odd."})
    fake.garbage_on = "zebra knob"
    stats = prepare(config(tmp_path, pages, fake.base_url), tmp_path / "run1")
    garbage = [p for p in fake.prompts() if "zebra knob" in p]
    assert len(garbage) == 2 and fake.answered == 17                 # asked twice, then given up
    assert [b["seed"] for b in fake.bodies if "zebra knob" in b["messages"][-1]["content"]] == [0, 1]
    rejected = [ev for ev in teacher_events(tmp_path / "run1").values() if ev["status"] == "rejected"]
    assert len(rejected) == 1 and rejected[0]["reason"] == "teacher:unparseable"
    assert stats["teacher"]["sections_rejected"] == {"teacher:unparseable": 1}
    assert stats["sources"]["docs"]["kept"] == 15 and stats["sources"]["docs"]["rejected"] == 1
    prepare(config(tmp_path, pages, fake.base_url), tmp_path / "run2")
    assert fake.answered == 17                                        # paid once, even for a bad reply


def test_caps_refuse_before_any_request_or_cut_the_plan(tmp_path, pages, fake):
    with pytest.raises(WebtuneError, match="16 requests, over teacher.max_requests=5: nothing was sent"):
        prepare(config(tmp_path, pages, fake.base_url, "teacher.max_requests=5"), tmp_path / "run1")
    with pytest.raises(WebtuneError, match=r"over teacher.max_cost=0.0001"):
        prepare(config(tmp_path, pages, fake.base_url, "teacher.max_cost=0.0001", "teacher.price_input_per_1m=10",
                       "teacher.price_output_per_1m=30"), tmp_path / "run2")
    assert fake.requests == 0

    stats = prepare(config(tmp_path, pages, fake.base_url, "teacher.max_requests=5", "teacher.on_cap=partial"),
                    tmp_path / "run3")
    assert fake.requests == 5 and stats["teacher"]["sections_rejected"] == {"teacher:cap_reached": 11}
    reasons = sorted(ev["reason"] for ev in teacher_events(tmp_path / "run3").values() if ev["status"] == "rejected")
    assert reasons == ["teacher:cap_reached"] * 11
    prepare(config(tmp_path, pages, fake.base_url), tmp_path / "run4")   # the cap raised: only the rest is asked
    assert fake.requests == 16


def test_duplicates_across_sections_and_judged_questions_are_rejected_in_the_ledger(tmp_path, fake):
    pages = write_pages(tmp_path / "site", extra={(0, 0): "Shared knob.", (3, 2): "Shared knob."})
    fake.same_on, fake.off_topic = "Shared knob", 2
    stats = prepare(config(tmp_path, pages, fake.base_url, "teacher.judge.enabled=true"), tmp_path / "run")
    events = teacher_events(tmp_path / "run")
    dups = [(rid, q) for rid, ev in events.items() for q in ev["questions"] if q.get("reason") == "teacher:duplicate"]
    shared = [rid for rid, ev in events.items() if any("option 11 of the knob" in q["q"] for q in ev["questions"])]
    assert len(shared) == 2 and len(dups) == 3 and {rid for rid, _ in dups} == {shared[1]}
    assert all(q["duplicate_of"].startswith(f"{shared[0]}/docs_answer/q") for _, q in dups)
    assert events[dups[0][0]]["status"] == "rejected" and events[dups[0][0]]["reason"] == "teacher:duplicate"
    judged = [q for ev in events.values() for q in ev["questions"] if q.get("reason") == "teacher:judge_rejected"]
    assert len(judged) == 14 and all(q["judge"]["answered"] < 0.5 for q in judged)   # q2 of every other section
    assert stats["teacher"]["requests"]["sent"] == 16 + 15      # the judge: only sections with questions left
    assert stats["teacher"]["questions"]["rejected"] == {"teacher:duplicate": 3, "teacher:judge_rejected": 14}


def test_preview_asks_the_teacher_only_when_allowed(tmp_path, pages, fake, capsys):
    from webtune.preview import preview
    args = ["source=docs_pages", f"source.files.paths=[{pages}/*.html]", "template=docs_qa_teacher",
            f"teacher.base_url={fake.base_url}", "teacher.model=fake-teacher", f"runs_dir={tmp_path / 'runs'}",
            "mix.general.enabled=false", "model=openai_gpt4o_mini", "n=2"]   # no tokenizer to load
    preview(args)
    assert fake.requests == 0 and "(--allow-teacher asks)" in capsys.readouterr().out
    preview(args, allow_teacher=True)
    shown = capsys.readouterr().out
    assert fake.requests == 2 and shown.count("teacher q") == 6 and "How do I make option" in shown
    preview(args)                               # now cached: shown without a request
    assert fake.requests == 2 and capsys.readouterr().out.count("teacher q") == 6


def test_answers_mode_is_labelled_not_grounded_and_its_answers_are_checked(tmp_path, pages, fake):
    fake.answers = True
    cfg = config(tmp_path, pages, fake.base_url)
    OmegaConf.update(cfg, "template.tasks.0.user", {"teacher": "templates/docs_qa/question_prompt.j2", "n": 3,
                                                    "answers": True}, merge=False)
    stats = prepare(cfg, tmp_path / "run")
    assert stats["teacher"]["grounded_by_construction"] is False
    exs = examples(tmp_path / "run")
    assert len(exs) == 48 and all(ex["teacher"] == "question_and_answer" for ex in exs)
    assert exs[0]["messages"][2]["content"].startswith("It takes option")       # the teacher's words, not the page's
    fates = [q for ev in teacher_events(tmp_path / "run").values() for q in ev["questions"]]
    assert all(q["grounding"]["unsupported"] == ["42"] for q in fates)          # a number the section never says
    assert stats["teacher"]["answers_with_unsupported"] == 48
