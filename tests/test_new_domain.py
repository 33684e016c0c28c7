"""A new domain is YAML and Jinja only: an FAQ in JSONL, its template and schema, no Python."""
import json

import orjson

from tests.conftest import SMALL, only_run_dir, webtune

TOPICS = ["shipping", "returns", "warranty", "payment", "accounts", "gift cards", "repairs", "recycling"]


def write_faq_domain(root):
    (root / "conf/source").mkdir(parents=True)
    (root / "conf/template").mkdir(parents=True)
    (root / "tpl").mkdir()
    rows = []
    for i in range(120):
        topic = TOPICS[i % len(TOPICS)]
        rows.append({"question": f"How does {topic} work for order type {i}?",
                     "answer": f"For order type {i}, {topic} is handled by our support team within {i % 7 + 1} "
                               f"business days, and you will get an email at every step of the way.",
                     "category": topic})
    rows.append({"question": "Missing its answer?"})          # rejected: schema needs `answer`
    with open(root / "faq.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
        fh.write("{not json\n")                                # rejected: malformed line
    (root / "conf/source/faq.yaml").write_text(
        f"kind: files\nname: faq\nfiles:\n  paths: [{root / 'faq.jsonl'}]\n  format: jsonl\n")
    (root / "tpl/user.j2").write_text("{{ question }}")
    (root / "tpl/assistant.j2").write_text("{{ answer }}")
    (root / "tpl/schema.json").write_text(json.dumps({
        "type": "object", "required": ["question", "answer"],
        "properties": {"question": {"type": "string"}, "answer": {"type": "string"}}}))
    (root / "conf/template/faq.yaml").write_text(f"""name: faq
tasks:
  - name: faq_answer
    system: "You answer customer questions for the store, briefly and kindly."
    user: {root / 'tpl/user.j2'}
    assistant: {root / 'tpl/assistant.j2'}
    input_schema: {root / 'tpl/schema.json'}
    fields: [question, answer]
""")


def test_faq_domain_from_yaml_and_jinja_only(tmp_path):
    write_faq_domain(tmp_path)
    runs = tmp_path / "runs"
    r = webtune("run", "--config-dir", str(tmp_path / "conf"), "source=faq", "template=faq",
                f"runs_dir={runs}", *SMALL, "prepare.filters.min_words=3")
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run_dir(runs)
    assert run.name.endswith("faq_faq")
    examples = [orjson.loads(x) for x in (run / "data/examples.jsonl").read_bytes().splitlines()]
    faq = [e for e in examples if e["source"] == "faq"]
    assert faq and all(e["template"] == "faq_answer" for e in faq)
    assert faq[0]["messages"][0] == {"role": "system", "content": "You answer customer questions for the store, briefly and kindly."}
    ledger = [orjson.loads(x) for x in (run / "ledger.jsonl").read_bytes().splitlines()]
    faq_ledger = {x["id"]: x for x in ledger if x["source"] == "faq"}
    assert len(faq_ledger) == 122                             # 121 objects + the malformed line
    assert faq_ledger["faq:faq.jsonl#121"]["status"] == "rejected"
    assert faq_ledger["faq:faq.jsonl#122"]["status"] == "rejected"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval"]["tuned"]["domain"]["loss"] > 0
