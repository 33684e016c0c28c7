"""Hostile templates and config through the CLI: files a config names stay in the domain's folder,
a template that includes itself, runs_dir at a system root or a file, a disk filling up in a prepare
worker, and `webtune ledger RUN` after a run that stopped before its ledger stage."""
from __future__ import annotations

import errno
import json
import os

import pytest

from tests.conftest import TINY_MODEL, only_run_dir, webtune
from webtune.errors import WebtuneError
from webtune.prepare.executors.local import in_processes


def write_domain(root, outside):
    """A domain in `root` (./conf, tpl/, data/) and files outside it, in `outside`."""
    for folder in ("conf/source", "conf/template", "tpl", "data"):
        (root / folder).mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.j2").write_text("the secret")
    (outside / "schema.json").write_text("{}")
    (root / "tpl/user.j2").write_text("{{ question }}")
    (root / "tpl/assistant.j2").write_text("{{ answer }}")
    (root / "tpl/self.j2").write_text("{{ question }}{% include 'loop.j2' %}")
    (root / "tpl/loop.j2").write_text("{% include 'self.j2' %}")
    os.symlink(outside / "secret.j2", root / "tpl/leak.j2")              # a link inside, leading out
    (root / "tpl/includes_leak.j2").write_text("{% include 'leak.j2' %}")
    (root / "data/faq.jsonl").write_text("".join(json.dumps({"question": f"q{i}?", "answer": ""}) + "\n"
                                                 for i in range(3)))
    (root / "conf/source/faq.yaml").write_text("kind: files\nname: faq\nfiles:\n  paths: [data]\n")
    (root / "data/dump.bin").write_bytes(b"\0" * 16)
    os.symlink(".", root / "data/loop")                                   # data/loop -> data
    tasks = {"escapes": [("user", os.path.relpath(outside / "secret.j2", root)), ("assistant", str(outside / "secret.j2")),
                         ("input_schema", str(outside / "schema.json"))],
             "home": [("user", "~/.bashrc")],
             "selfinc": [("user", "tpl/self.j2")],
             "leak": [("user", "tpl/includes_leak.j2")],
             "ok": []}
    for name, files in tasks.items():
        given = dict(files)
        (root / f"conf/template/{name}.yaml").write_text(
            f"name: {name}\ntasks:\n  - name: t\n    user: {given.get('user', 'tpl/user.j2')}\n"
            f"    assistant: {given.get('assistant', 'tpl/assistant.j2')}\n"
            + (f"    input_schema: {given['input_schema']}\n" if "input_schema" in given else ""))
    with open(root / "conf/template/escapes.yaml", "a") as fh:   # the same through a teacher prompt and a turn
        fh.write(f"  - name: t2\n    user: {{teacher: {outside / 'secret.j2'}, n: 2}}\n    assistant: tpl/assistant.j2\n"
                 f"  - name: t3\n    turns:\n      - {{role: user, template: {outside / 'secret.j2'}}}\n"
                 f"      - {{role: assistant, template: tpl/assistant.j2}}\n")


@pytest.fixture
def domain(tmp_path):
    write_domain(tmp_path / "domain", tmp_path / "outside")
    return tmp_path / "domain"


def errors(r) -> list[str]:
    return [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]


def test_template_files_outside_the_domain_folder_are_refused_naming_the_key(domain):
    # and a glob through a symlink loop that matches nothing readable: prompt, one line naming it
    r = webtune("validate", "source=faq", "template=escapes", "source.files.paths=[data/**/*.bin]", cwd=domain)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = errors(r)
    assert "error: source 'faq': source.files.paths: 'data/**/*.bin' matches no files webtune reads" in lines, lines
    for key in ("template.tasks[0].user", "template.tasks[0].assistant", "template.tasks[0].input_schema",
                "template.tasks[1].user.teacher", "template.tasks[2].turns[0].template"):
        assert any(line.startswith(f"error: {key}: ") and "outside the domain's folder" in line for line in lines), r.stderr
    r = webtune("prepare", "source=faq", "template=home", "runs_dir=runs", cwd=domain)
    assert r.returncode == 2 and not (domain / "runs").exists()      # refused before any stage
    [line] = errors(r)
    assert line.startswith("error: template.tasks[0].user: '~/.bashrc' lies outside the domain's folder"), line


def test_a_self_include_a_link_out_and_runs_dir_at_the_root_are_one_line_each(domain):
    r = webtune("validate", "source=faq", "template=selfinc", "runs_dir=/", cwd=domain)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "RecursionError" not in r.stderr
    lines = errors(r)
    assert any("self.j2: the template includes itself (self.j2 -> loop.j2 -> self.j2)" in line for line in lines), lines
    assert any(line.startswith("error: runs_dir='/' is the filesystem root") for line in lines), lines
    (domain / "afile").write_text("")
    r = webtune("validate", "source=faq", "template=leak", "runs_dir=afile/runs", cwd=domain)
    lines = errors(r)
    assert any("includes_leak.j2: includes 'leak.j2'" in line and "a link leading out" in line for line in lines), lines
    assert any("runs_dir='afile/runs'" in line and "is a file, not a folder" in line for line in lines), lines
    assert "the secret" not in r.stdout + r.stderr


def test_ledger_answers_after_a_run_that_stopped_before_its_ledger_stage(domain):
    # every record lacks its answer: no domain example is left, and mix stops the run
    r = webtune("prepare", "source=faq", "template=ok", "runs_dir=runs", "prepare.workers=1",
                "mix.general.enabled=false", *TINY_MODEL, cwd=domain)
    assert r.returncode == 2 and "webtune ledger" not in r.stdout
    run = only_run_dir(domain / "runs")
    assert not (run / "ledger.jsonl").exists()
    r = webtune("ledger", str(run), "--source", "faq", cwd=domain)
    assert r.returncode == 0, r.stderr
    fates = [line.split()[:2] for line in r.stdout.splitlines() if line.startswith("faq:")]
    assert fates == [[f"faq:faq.jsonl#{i}", "rejected"] for i in (1, 2, 3)], r.stdout
    assert "stopped before its ledger stage" in r.stderr


def fill_the_disk(shard: int, path: str) -> dict:
    """A prepare worker's write failing as it does on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{path}/shard-{shard}.jsonl")


def test_a_full_disk_in_a_prepare_worker_is_one_short_line(tmp_path):
    with pytest.raises(WebtuneError) as e:
        in_processes(fill_the_disk, [(0, str(tmp_path)), (1, str(tmp_path))])
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message and len(message) < 300, message
    assert message.startswith("prepare worker ") and "No space left on device writing " in message, message
