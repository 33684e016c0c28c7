"""`webtune list sources|templates|models`: what ships, one line each, and what the user's conf/ adds."""
import os

from tests.conftest import webtune
from webtune.cli import main
from webtune.paths import CONF_DIR


def listed(capsys, *args) -> dict[str, str]:
    assert main(["list", *args]) == 0
    out = capsys.readouterr().out
    return {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}


def test_list_shows_every_shipped_config_with_its_description(capsys):
    for what, group in (("sources", "source"), ("templates", "template"), ("models", "model")):
        got = listed(capsys, what)
        assert set(got) == {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    got = listed(capsys, "sources")
    assert "Documentation pages saved as HTML (e.g. `wget --mirror` output)" in got["docs_pages"]  # not cut at "e.g."
    assert got["example"].endswith("shaped like a Bright Data snapshot download.")
    assert all(len(line) < 160 for line in got.values())               # one line each


def test_list_marks_the_users_own_configs(tmp_path, capsys):
    (tmp_path / "conf/template").mkdir(parents=True)
    (tmp_path / "conf/template/recipes.yaml").write_text("# Recipes: a dish from its ingredients.\nname: recipes\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        got = listed(capsys, "templates")
    finally:
        os.chdir(cwd)
    assert got["recipes"].split(None, 1)[1] == "Recipes: a dish from its ingredients.  [your conf/]"
    assert "docs_qa" in got


def test_list_without_a_group_lists_all_three_on_stdout():
    r = webtune("list")
    assert r.returncode == 0, r.stderr
    assert "sources (use as source=NAME):" in r.stdout and "models (use as model=NAME):" in r.stdout
    assert "smollm2_135m_lora" in r.stdout


def test_config_errors_name_what_a_pip_user_can_act_on():
    import pytest

    from webtune.errors import WebtuneError
    from webtune.hydra_setup import validate_overrides
    with pytest.raises(WebtuneError) as got:
        validate_overrides(["source=nope"])
    assert "webtune list sources" in str(got.value) and "docs_pages" in str(got.value)
    with pytest.raises(WebtuneError) as got:
        validate_overrides(["model.train.learning_rat=1e-4"])
    assert "did you mean model.train.learning_rate?" in str(got.value)
    assert "src/" not in str(got.value)


def test_library_deprecation_warnings_are_quiet_ours_are_not():
    import subprocess
    import sys
    code = ("import warnings; from webtune.cli import quiet_library_deprecations; quiet_library_deprecations(); "
            "warnings.warn_explicit('old rope_scaling', FutureWarning, 'configuration_utils.py', 1, "
            "module='transformers.configuration_utils'); "
            "warnings.warn_explicit('ours', FutureWarning, 'hf.py', 1, module='webtune.train.hf')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    assert "rope_scaling" not in err and "ours" in err
