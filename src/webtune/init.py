"""`webtune init NAME`: a starter domain in the current folder, ready for `preview` and `run`.

It writes a files source, a question/answer template (two Jinja turns and an input schema) and a
few sample records; `webtune` finds `./conf` by itself, so `webtune run source=NAME template=NAME`
works there at once. Replace the sample records with your own and edit the templates.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import WebtuneError

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

SAMPLES = [
    ("How long should I steep green tea?", "Steep green tea for two to three minutes; longer brings out bitterness."),
    ("What water temperature suits green tea?", "Use water at about 75 to 80 degrees Celsius, well below boiling."),
    ("Can I brew black tea with boiling water?", "Yes, black tea takes freshly boiled water and four to five minutes."),
    ("How much loose tea goes into one cup?", "Use about one teaspoon, roughly two to three grams, per cup of water."),
    ("Why does my tea taste bitter?", "Bitterness usually comes from water that is too hot or a steep that is too long."),
    ("Should I rinse oolong leaves first?", "A quick rinse wakes up rolled oolong leaves and washes off dust."),
    ("How many times can I re-steep oolong?", "Good oolong gives three to five infusions, each a little longer than the last."),
    ("How should I store loose tea?", "Keep it in an airtight, opaque tin away from heat, light and strong smells."),
    ("Does herbal tea contain caffeine?", "Most herbal infusions, such as chamomile or mint, contain no caffeine at all."),
    ("What is matcha?", "Matcha is green tea ground to a fine powder and whisked into water."),
    ("How do I whisk matcha without lumps?", "Sift the powder first, add a little water and whisk briskly in a zigzag."),
    ("Can I cold brew tea?", "Yes: steep the leaves in cold water in the fridge for six to twelve hours."),
    ("Is milk good in green tea?", "Milk usually masks green tea's delicate flavour, so most people drink it plain."),
    ("How long does loose tea stay fresh?", "Green tea is best within six months; black tea keeps well for about two years."),
    ("What makes white tea different?", "White tea comes from young buds that are withered and dried with little processing."),
    ("Which teapot suits oolong best?", "A small clay or porcelain pot lets you brew short, repeated infusions of oolong."),
    ("Does tea go stale in the fridge?", "The fridge adds moisture and odours, so keep tea in a cool cupboard instead."),
    ("What is a tea cosy for?", "A tea cosy keeps the pot warm while the leaves steep or between cups."),
    ("How do I make iced tea quickly?", "Brew the tea twice as strong, then pour it over a glass full of ice."),
    ("Why do some teas taste smoky?", "Smoky teas such as lapsang souchong are dried over pine wood fires."),
    ("What does first flush mean?", "First flush is the earliest spring harvest, prized for its light, bright taste."),
    ("How is pu-erh tea made?", "Pu-erh leaves are fermented and often aged for years, like a fine wine."),
    ("Can I reuse tea bags?", "A tea bag gives a weaker second cup, best brewed right after the first."),
    ("What is chai?", "Chai is black tea simmered with milk, sugar and spices such as cardamom and ginger."),
    ("Does lemon change the taste of tea?", "Lemon brightens black tea and lightens its colour, but it curdles milk."),
    ("How do I clean tea stains from a mug?", "Scrub the mug with a paste of baking soda and a little water."),
    ("What is rooibos?", "Rooibos is a caffeine-free South African herb with a sweet, nutty flavour."),
    ("Should tea leaves be crushed?", "Whole leaves give a smoother cup, while crushed leaves brew fast and strong."),
    ("How much caffeine is in black tea?", "A cup of black tea has roughly forty to seventy milligrams of caffeine."),
    ("Is loose leaf tea better than bags?", "Loose leaves have more room to unfurl, which usually gives a fuller flavour."),
    ("What is a gaiwan?", "A gaiwan is a lidded bowl for brewing tea in short, concentrated infusions."),
    ("Why does tea form a film on top?", "Hard water reacts with compounds in tea and leaves a thin film on the surface."),
]


def files_for(name: str) -> dict[str, str]:
    """Relative path -> content of every file the starter domain needs."""
    records = "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in SAMPLES)
    schema = {"type": "object", "required": ["question", "answer"],
              "properties": {"question": {"type": "string", "minLength": 5},
                             "answer": {"type": "string", "minLength": 5}}}
    return {
        f"conf/source/{name}.yaml": (
            f"# Records from local files: JSON, JSONL, CSV, HTML pages, VTT/SRT transcripts.\n"
            f"kind: files\nname: {name}             # record ids: {name}:records.jsonl#1\n"
            f"files:\n  paths: [data/{name}/records.jsonl]   # files, folders or globs\n"),
        f"conf/template/{name}.yaml": (
            f"# How one record becomes a chat example: a system prompt, a user turn, an assistant turn.\n"
            f"name: {name}\ntasks:\n  - name: {name}_answer\n"
            f"    system: \"You answer questions about tea clearly and briefly.\"\n"
            f"    user: templates/{name}/user.j2\n    assistant: templates/{name}/assistant.j2\n"
            f"    input_schema: templates/{name}/input.schema.json   # a record failing it is rejected\n"
            f"    fields: [question, answer]\n"),
        f"templates/{name}/user.j2": "{{ question }}\n",
        f"templates/{name}/assistant.j2": "{{ answer }}\n",
        f"templates/{name}/input.schema.json": json.dumps(schema, indent=2) + "\n",
        f"data/{name}/records.jsonl": records,
    }


def write_starter(name: str, root: Path, force: bool = False) -> list[Path]:
    if not NAME.match(name):
        raise WebtuneError(f"domain name {name!r}: use letters, digits and _ (starting with a letter)")
    planned = {root / rel: text for rel, text in files_for(name).items()}
    clash = [p for p in planned if p.exists()]
    if clash and not force:
        raise WebtuneError(f"{clash[0]} already exists: choose another name or pass --force to overwrite")
    for path, text in planned.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(planned)
