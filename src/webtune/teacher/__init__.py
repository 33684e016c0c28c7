"""The teacher: a model on any OpenAI-compatible chat endpoint writes the requests (the questions a
reader would ask), the source's own text stays the answer, so every example is grounded by
construction (instruction backtranslation, Li et al. 2023). A template task opts in with
`user: {teacher: <prompt file>, n: 3}`; `teacher=openai|local` (conf/teacher/) says where to ask.

  step.py    the prepare stage's teacher step: collect, plan, ask, judge, curate, render, ledger
  plan.py    the plan line and the caps, before the first request; the budget while asking
  ask.py     bounded concurrency, progress, one re-ask of an unparseable reply
  client.py  one chat completion through the openai SDK (its own retries; no second layer)
  cache.py   replies content-addressed in runs/.cache/teacher/: paid once, resumable
  parse.py   the reply's questions, parsed robustly
  judge.py   the optional judge: answered by the section? self-contained?
  preview.py questions for a few records in `webtune preview --allow-teacher`
"""
from __future__ import annotations

from .step import run, teacher_tasks

__all__ = ["run", "teacher_tasks"]
