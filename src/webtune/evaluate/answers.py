"""`webtune eval RUN --answers FILE.jsonl`: answers produced elsewhere (another system, a hosted model)
scored on the run's held-out prompts, with every generation metric, and paired against the run's own.

FILE has one JSON object a line: {"id": "<prompt id>", "answer": "<text>"} (`prompt_id` is accepted
for `id`). The prompt ids are those of RUN/eval/generations.jsonl, so evaluate the run first. Held-out
loss needs the model's log-probabilities of the reference, which an answer file does not carry.
"""
from __future__ import annotations

from pathlib import Path

import orjson

from ..console import log
from ..errors import WebtuneError
from ..fileio import read_jsonl, write_json
from . import evidence as ev_
from . import stage
from .paired import describe


def read_answers(path: Path, known: set[str]) -> dict[str, str]:
    """{prompt id: answer}; a line that is not such an object, or names a prompt the run does not
    hold, is a one-line error naming the line."""
    if not path.is_file():
        raise WebtuneError(f"--answers {path}: no such file")
    answers = {}
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise WebtuneError(f"{path} line {n}: not JSON (one {{\"id\", \"answer\"}} object a line)") from None
        pid = row.get("id", row.get("prompt_id")) if isinstance(row, dict) else None
        answer = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(pid, str) or not isinstance(answer, str):
            raise WebtuneError(f"{path} line {n}: needs a string \"id\" (a prompt id) and a string \"answer\"")
        if pid not in known:
            raise WebtuneError(f"{path} line {n}: prompt id {pid!r} is not one of the run's held-out prompts "
                               f"(their ids are in eval/generations.jsonl)")
        if pid in answers:
            raise WebtuneError(f"{path} line {n}: prompt id {pid!r} is answered twice")
        answers[pid] = answer
    if not answers:
        raise WebtuneError(f"{path}: no answers")
    return answers


def score_answers(cfg, run_dir: Path, path: Path) -> dict:
    """Score the answers and pair them with each model of the run's evaluation; writes and returns
    eval/answers/<file stem>.json."""
    generated = run_dir / "eval/generations.jsonl"
    if not generated.exists():
        raise WebtuneError(f"{run_dir}: not evaluated yet (no eval/generations.jsonl): `webtune eval {run_dir}` first")
    rows = {r["id"]: r for r in read_jsonl(generated) if "id" in r}
    answers = read_answers(Path(path), set(rows))
    chosen = [rows[pid] for pid in rows if pid in answers]       # the run's order
    prompts = [r["prompt"] + [{"role": "assistant", "content": r["reference"]}] for r in chosen]
    outputs = {"answers": [answers[r["id"]] for r in chosen],
               **{label: [r[label] for r in chosen] for label in ("base", "tuned", "promoted") if label in chosen[0]}}
    checks_of, ground = stage.task_checks(cfg, run_dir), stage.grounding_checker(run_dir)
    results, items = {}, {}
    for label, texts in outputs.items():
        results[label] = {}
        stage.score_generations(results[label], prompts, texts, checks_of)
        items[label] = ev_.item_scores({}, prompts, texts, checks_of, ground)
        results[label]["grounding"] = stage.grounding_rates(items[label])
    e = cfg.eval
    evidence = {f"answers_vs_{old}": ev_.comparisons(items[old], items["answers"], e.seed, e.resamples, old, "answers",
                                                     e.get("margins"))
                for old in outputs if old != "answers"}
    out = {"file": str(path), "n": len(chosen), "of": len(rows), **results, "evidence": evidence,
           "items": [{"id": r["id"], "answer": answers[r["id"]],
                      **{m: v[r["id"]] for m, v in items["answers"].items() if r["id"] in v}} for r in chosen]}
    write_json(run_dir / "eval/answers" / f"{Path(path).stem}.json", out)
    g = results["answers"].get("generation", {})
    log(f"answers from {path}: {len(chosen)} of the run's {len(rows)} generated prompts; ROUGE-L {g.get('rougeL')}, "
        f"chrF {g.get('chrF')}, BLEU {g.get('BLEU')}")
    for comparison in evidence.values():
        for c in comparison.values():
            if c["n"]:
                log(f"  {describe(c)}")
    log(f"written: {run_dir / 'eval/answers' / (Path(path).stem + '.json')}")
    return out
