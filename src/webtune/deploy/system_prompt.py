"""The system prompt a model was trained with, used when a request sends none.

A chat template may add a default system message to a conversation that has none (SmolLM2's does:
"You are a helpful AI assistant named SmolLM, trained by Hugging Face"); a tuned model served that
way answers under a prompt it never saw. The prompts a run trained with are in its training split
(`RUN/data/train.jsonl`, the first message of each conversation); a merged export records them in
`system_prompts.json`. `webtune serve`, `chat` and the Ollama Modelfile use the most used one
(`--system` overrides); a run that trained without system messages keeps the template's behaviour.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

RECORD = "system_prompts.json"
SCANNED = 20000  # training conversations read (the prompts come from a few task templates)


def run_dir_of(model_dir: Path) -> Optional[Path]:
    """The run a model directory came from: RUN/model, or a registry version's recorded run."""
    parent = Path(model_dir).parent
    if (parent / "data" / "train.jsonl").exists():
        return parent
    source = parent / "source.json"
    if source.exists():
        run = json.loads(source.read_text()).get("run_dir")
        if run and (Path(run) / "data" / "train.jsonl").exists():
            return Path(run)
    return None


def trained_system_prompts(model_dir: Path) -> list[str]:
    """The system prompts the model was trained with, most used first ('' counts conversations
    without one); [] when unknown."""
    recorded = Path(model_dir) / RECORD
    if recorded.exists():
        return json.loads(recorded.read_text())["system_prompts"]
    run = run_dir_of(model_dir)
    if run is None:
        return []
    counts: Counter[str] = Counter()
    with open(run / "data" / "train.jsonl", encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n >= SCANNED:
                break
            if line.strip():
                first = (json.loads(line).get("messages") or [{}])[0]
                counts[first.get("content", "") if first.get("role") == "system" else ""] += 1
    return [text for text, _ in counts.most_common()]


def default_system(model_dir: Path) -> Optional[str]:
    """The system prompt for a request without one: the most used trained prompt, or None."""
    prompts = trained_system_prompts(model_dir)
    return prompts[0] if prompts and prompts[0] else None


def record(model_dir: Path, prompts: list[str]) -> None:
    (Path(model_dir) / RECORD).write_text(json.dumps({"system_prompts": prompts}, indent=2))
