"""The teacher's pieces on their own: reply parsing, the teacher turn in a template task, the question
dedupe, and the plan and caps (no server, no run)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from webtune.config import TaskConfig, TeacherConfig, teacher_turn
from webtune.errors import WebtuneError
from webtune.teacher.parse import parse_questions
from webtune.teacher.plan import make_plan
from webtune.teacher.step import near_duplicates

Q = ["How do I sort the keys in json.dumps?", "What does json.loads return for a float?", "Why pass indent=2?"]


@pytest.mark.parametrize("reply", [
    '{"questions": ["How do I sort the keys in json.dumps?", "What does json.loads return for a float?", "Why pass indent=2?"]}',
    'Sure! Here they are:\n```json\n{"questions": ["How do I sort the keys in json.dumps?", '
    '"What does json.loads return for a float?", "Why pass indent=2?"]}\n```\nHope that helps.',
    '["How do I sort the keys in json.dumps?", "What does json.loads return for a float?", "Why pass indent=2?"]',
    "Questions:\n1. How do I sort the keys in json.dumps?\n2) What does json.loads return for a float?\n- Why pass indent=2?",
])
def test_a_reply_parses_as_json_fenced_json_a_list_or_numbered_lines(reply):
    assert parse_questions(reply, 3) == Q


def test_unusable_replies_parse_to_nothing_and_items_are_cleaned():
    assert parse_questions("I cannot help with that.", 3) is None
    assert parse_questions('{"questions": []}', 3) is None
    assert parse_questions('{"questions": ["Why?", "x" , 3]}', 3) is None                       # too short, not text
    assert parse_questions('{"questions": ["How do I sort keys?", "how do I sort keys?", "What is indent for?", '
                           '"What is a dumps call?"]}', 2) == ["How do I sort keys?", "What is indent for?"]
    pairs = parse_questions('{"questions": [{"question": "How do I sort keys?", "answer": "sort_keys=True"}, '
                            '{"question": "What is indent for?"}]}', 3, answers=True)
    assert pairs == [{"question": "How do I sort keys?", "answer": "sort_keys=True"}]           # no answer: dropped


def task(user):
    return OmegaConf.merge(OmegaConf.structured(TaskConfig), {"name": "docs_answer", "user": user})


def test_the_teacher_turn_of_a_task_is_checked_naming_the_key():
    assert teacher_turn(task("templates/docs_qa/answer_user.j2")) is None
    turn = teacher_turn(task({"teacher": "templates/docs_qa/question_prompt.j2", "n": 5}))
    assert (turn.prompt, turn.n, turn.answers) == ("templates/docs_qa/question_prompt.j2", 5, False)
    for user, says in [({"teacher": "p.j2", "m": 3}, "user.m is not a teacher setting"),
                       ({"n": 3}, "user.teacher must name the prompt file"),
                       ({"teacher": "p.j2", "n": 0}, "user.n must be a whole number from 1 to 20"),
                       ({"teacher": "p.j2", "answers": "yes"}, "user.answers must be true or false")]:
        with pytest.raises(WebtuneError, match=f"template task 'docs_answer': {says}"):
            teacher_turn(task(user))


def test_near_duplicate_questions_keep_the_first_in_input_order():
    words = [q.lower().split() for q in ["how do i sort keys in json dumps", "how do i sort the keys in json dumps",
                                         "what is a socket", "how do i sort keys in json dumps", "what is a pipe"]]
    assert near_duplicates(words, 0.8) == [None, 0, None, 0, None]
    assert near_duplicates(words, None) == [None, None, None, 0, None]              # exact copies only


def t(**over):
    return SimpleNamespace(**{**vars(OmegaConf.to_object(OmegaConf.structured(TeacherConfig))), **over})


def test_the_plan_refuses_over_a_cap_or_cuts_to_what_fits():
    est = [(1000, 100)] * 10
    priced = t(price_input_per_1m=1.0, price_output_per_1m=2.0)
    plan, fits = make_plan(priced, 12, 2, est)
    assert fits == 10 and plan.cost == pytest.approx(0.012)
    assert "12 sections, 2 cached; 10 requests" in plan.line(priced) and "about $0.01 at $1/$2 per 1M" in plan.line(priced)
    with pytest.raises(WebtuneError, match="10 requests, over teacher.max_requests=4: nothing was sent"):
        make_plan(t(max_requests=4), 10, 0, est)
    with pytest.raises(WebtuneError, match="needs prices to compare with"):
        make_plan(t(max_cost=1.0), 10, 0, est)
    capped = t(max_cost=0.005, price_input_per_1m=1.0, price_output_per_1m=2.0, on_cap="partial")
    plan, fits = make_plan(capped, 10, 0, est)
    assert fits == 4 and plan.capped == 6 and "6 over the caps left out" in plan.line(capped)
