"""`webtune preview` for a template task whose user turn a teacher writes: the questions of the
sections shown, from the teacher cache (free), or asked now with `--allow-teacher` (cached, so the
run that follows pays nothing for them). Without the flag and without a cached reply, the prompt the
teacher would be sent is shown instead, with how to ask."""
from __future__ import annotations

from ..config import plain
from .cache import ReplyCache, cache_root
from .plan import Budget
from .step import Asker, Section, question_example, request_key, settings


def teacher_examples(cfg, task, record_id: str, messages: list[dict], allow_teacher: bool, console=None):
    """(examples, note): the record's examples with the teacher's questions in the user turn, or
    ([messages], why not) when the teacher is not asked."""
    t = plain(cfg.teacher)
    prompt = next(m["content"] for m in messages if m["role"] == "user")
    target = next(m["content"] for m in reversed(messages) if m["role"] == "assistant")
    turn = task.teacher
    key = request_key(kind="questions", model=t.model, prompt=prompt, section=target, n=turn.n,
                      answers=turn.answers, **settings(t))
    cache = ReplyCache(cache_root(cfg.runs_dir))
    if cache.get(key) is None and not allow_teacher:
        return [messages], "prompt (--allow-teacher asks)"
    example = {"id": f"{record_id}/{task.name}", "messages": messages}
    section = Section(0, example, turn.n, turn.answers, prompt, target, key)
    Asker(t, cache, Budget(t), console).questions([section])
    if section.questions is None:
        return [messages], section.reason
    return [question_example(example, f"{example['id']}/q{k + 1}", q)["messages"] for k, q in enumerate(section.questions)], ""
