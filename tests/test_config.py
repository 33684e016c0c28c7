"""Every shipped config composes; a typo anywhere fails in one line naming the file and key."""
from pathlib import Path

import pytest

from webtune.hydra_setup import CONF_DIR, compose

from tests.conftest import webtune

GROUPS = ["source", "template", "mix", "model", "eval"]


def group_files():
    for group in GROUPS:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            yield group, path.stem


@pytest.mark.parametrize("group,name", list(group_files()))
def test_every_shipped_config_composes(group, name):
    cfg = compose([f"{group}={name}"])
    assert cfg[group] is not None
    assert cfg.name


def test_unknown_key_on_the_command_line_is_one_line():
    r = webtune("run", "nosuchkey=1")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "unknown key nosuchkey" in lines[0]
    assert "Traceback" not in r.stderr


def test_wrong_type_names_the_key():
    r = webtune("run", "mix.val_fraction=lots")
    assert r.returncode == 2
    assert "mix.val_fraction" in r.stderr and "lots" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_typo_in_a_users_yaml_names_file_and_key(tmp_path):
    (tmp_path / "source").mkdir()
    bad = tmp_path / "source" / "mine.yaml"
    bad.write_text("kind: files\nname: mine\nfiles:\n  pathz: [data.jsonl]\n")
    r = webtune("run", "--config-dir", str(tmp_path), "source=mine")
    assert r.returncode == 2
    assert str(bad) in r.stderr and "source.files.pathz" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("group,name", [("mix", "default"), ("model", "smollm2_135m_lora"), ("eval", "default")])
def test_typo_in_a_shipped_yaml_names_file_and_key(tmp_path, group, name):
    # A shipped file with a typo, shadowing the real one through the search path.
    (tmp_path / group).mkdir()
    text = (CONF_DIR / group / f"{name}.yaml").read_text()
    shadow = tmp_path / group / f"{name}_typo.yaml"
    shadow.write_text(text + "\nmisspelt_key: 1\n")
    r = webtune("run", "--config-dir", str(tmp_path), f"{group}={name}_typo")
    assert r.returncode == 2
    assert str(shadow) in r.stderr and f"{group}.misspelt_key" in r.stderr


def test_traceback_only_when_asked(tmp_path):
    r = webtune("run", "nosuchkey=1", "--verbose")
    assert r.returncode != 0
    assert "Traceback" in r.stderr
