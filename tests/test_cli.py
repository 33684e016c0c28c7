"""One CLI: every command parsed in one place, `--help` on each, arguments in any order, Hydra's
arguments passed through untouched; `validate` catches what can be caught without running."""
from __future__ import annotations

import dataclasses
import typing
from enum import Enum

import pytest

from webtune import cli, config
from webtune.hydra_setup import validate_overrides
from webtune.errors import WebtuneError

from tests.conftest import webtune

COMMANDS = sorted(cli.build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert f"usage: webtune {command}" in capsys.readouterr().out


def test_serve_takes_its_options_before_or_after_the_name():
    parser = cli.build_parser()
    for argv in (["serve", "shop", "--port", "9000"], ["serve", "--port", "9000", "shop"],
                 ["serve", "--host", "127.0.0.1", "shop", "--port", "9000"]):
        ns = parser.parse_args(argv)
        assert (ns.target, ns.port, ns.host) == ("shop", 9000, "127.0.0.1")


def test_models_registry_option_goes_before_or_after_the_action():
    parser = cli.build_parser()
    assert parser.parse_args(["models", "--registry", "r", "list"]).registry == "r"
    assert parser.parse_args(["models", "promote", "shop", "v2", "--registry", "r", "--force"]).registry == "r"


def test_hydra_arguments_pass_through_in_the_order_typed():
    flags, rest = cli.split_hydra_args("preview", ["-m", "--allow-trigger", "--config-dir", "my conf", "a=1",
                                                   "hydra.job.chdir=false", "n=3"])
    assert flags == {"allow_trigger": True, "allow_teacher": False}
    assert rest == ["-m", "--config-dir", "my conf", "a=1", "hydra.job.chdir=false", "n=3"]
    assert cli.split_hydra_args("run", ["--allow-trigger"])[1] == ["--allow-trigger"]  # not run's flag: Hydra's


def enum_fields(cls=config.WebtuneConfig, prefix="") -> typing.Iterator[tuple[str, type[Enum]]]:
    """(dotted key, Enum type) of every enum-typed field reachable from the root config, lists aside."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, type) and issubclass(kind, Enum):
            yield prefix + f.name, kind
        elif dataclasses.is_dataclass(kind):
            yield from enum_fields(kind, f"{prefix}{f.name}.")


ENUM_FIELDS = list(enum_fields())


def test_the_schema_has_the_enum_fields_the_docs_promise():
    keys = {key for key, _ in ENUM_FIELDS}
    assert {"mix.short_policy", "mix.packing.overflow", "model.kind", "model.method", "source.kind",
            "source.files.format", "prepare.executor"} <= keys


@pytest.mark.parametrize("key,kind", ENUM_FIELDS, ids=[k for k, _ in ENUM_FIELDS])
def test_every_enum_field_rejects_a_wrong_value(key, kind):
    with pytest.raises(WebtuneError) as err:
        validate_overrides([f"{key}=not_a_choice"])
    message = str(err.value)
    assert f"{key}=not_a_choice is not one of" in message
    assert all(member.value in message for member in kind)
    assert "\n" not in message


def test_a_valid_enum_value_composes_and_compares_as_its_string():
    cfg = validate_overrides(["mix.short_policy=oversample", "model.method=full"])
    assert cfg.mix.short_policy == "oversample" and f"{cfg.model.method}" == "full"


def test_validate_catches_a_wrong_enum_in_one_line():
    r = webtune("validate", "mix.short_policy=sometimes")
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: config error in command line: mix.short_policy=sometimes is not one of "
                                "cap, oversample (pick one of those)")


def test_validate_reports_each_problem_on_its_own_line(tmp_path):
    (tmp_path / "conf/template").mkdir(parents=True)
    (tmp_path / "broken.j2").write_text("{{ title }")
    (tmp_path / "conf/template/broken.yaml").write_text(
        f"name: broken\ntasks:\n  - name: t\n    user: {tmp_path / 'broken.j2'}\n    assistant: {tmp_path / 'broken.j2'}\n")
    env = {"BRIGHTDATA_API_TOKEN": ""}
    r = webtune("validate", "source=brightdata_amazon", "template=broken", "model.name_or_path=./no/such/model",
                cwd=tmp_path, env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert any("broken.j2:1: template syntax error" in line for line in lines), r.stderr
    assert any("BRIGHTDATA_API_TOKEN" in line for line in lines), r.stderr
    assert any("./no/such/model" in line and "not a folder" in line for line in lines), r.stderr
    assert len(lines) == 3, r.stderr


def test_run_refuses_before_its_first_stage(tmp_path):
    r = webtune("run", "source=brightdata_amazon", f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path,
                env={"BRIGHTDATA_API_TOKEN": ""})
    assert r.returncode == 2
    assert "BRIGHTDATA_API_TOKEN" in r.stderr
    assert not (tmp_path / "runs").exists()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_name_with_port_answers_models(tmp_path):
    import json
    import shutil
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import FIXTURES
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "tiny_model", run / "model")
    (run / "metrics.json").write_text(json.dumps({"eval": {"passed": True, "status": "passed", "flags": []}}))
    (run / "config.yaml").write_text("name: shop\n")
    registry = str(tmp_path / "registry")
    for argv in (["models", "register", "shop", str(run), "--registry", registry],
                 ["models", "--registry", registry, "promote", "shop", "v1"]):
        r = webtune(*argv, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "webtune", "serve", "shop", "--port", str(port),
                               "--registry", registry], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start within 120 s"
                time.sleep(0.5)
        assert any(m["id"].startswith("shop") for m in models["data"]), models
    finally:
        server.terminate()
        server.wait(timeout=30)
