"""The Bright Data client against a fake Bright Data server on 127.0.0.1 that follows the contract."""
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from tests.fakes.brightdata_server import FakeBrightData, serialise
from webtune.config import BrightDataConfig
from webtune.errors import WebtuneError
from webtune.paths import SHIPPED
from webtune.records import Record, Rejection
from webtune.sources import brightdata

AMAZON = "gd_l7q7dkf244hwjntr0"
ENV = "WEBTUNE_TEST_BD_TOKEN"
URLS = [f"https://www.amazon.com/dp/B0CRMZHDG{i}" for i in range(3)]


@pytest.fixture
def fake():
    with FakeBrightData() as server:
        yield server


@pytest.fixture
def token(fake, monkeypatch):
    monkeypatch.setenv(ENV, fake.token)
    return fake.token


def make_cfg(fake, **over):
    values = dict(dataset_id=AMAZON, inputs=[{"url": u} for u in URLS], base_url=fake.base_url,
                  api_key_env=ENV, poll_interval=0.01, poll_timeout=20.0, timeout=5.0,
                  primary_fields=["title", "description"], mode="async", rate_limit_wait=0.01)
    values.update(over)
    cfg = OmegaConf.merge(OmegaConf.structured(BrightDataConfig), values)   # the real schema
    OmegaConf.set_struct(cfg, False)
    cfg.retry_backoff = 0.01            # keep urllib3 / tenacity back-off tiny in tests
    return cfg


def quiet():
    return Console(file=io.StringIO(), width=120, soft_wrap=True)


def read_lines(path):
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def assert_no_token(raw_dir: Path, token: str):
    for path in raw_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            assert token.encode() not in data, path


def acquire(cfg, raw_dir, console=None, **kwargs):
    return brightdata.acquire(cfg, "amazon", raw_dir, console=console or quiet(), **kwargs)


# ---------------------------------------------------------------- the happy path
def test_trigger_poll_download_and_records(fake, token, tmp_path):
    console = quiet()
    path = acquire(make_cfg(fake), tmp_path, console)
    [trigger] = fake.triggers
    sid = trigger["snapshot_id"]
    assert path == tmp_path / f"{sid}.jsonl.gz"
    assert trigger["query"] == {"dataset_id": AMAZON, "include_errors": "true"}
    assert trigger["inputs"] == [{"url": u} for u in URLS]
    assert all(r["auth_ok"] and r["user_agent"].startswith("webtune/") for r in fake.requests)
    assert fake.count("progress") == 3                        # starting -> running -> ready
    state = json.loads((tmp_path / "snapshot.json").read_text())
    assert state["snapshot_id"] == sid and state["dataset_id"] == AMAZON and state["triggered_at"]
    assert state["progress"]["status"] == "ready" and state["progress"]["records"] == 3
    items = list(brightdata.iter_records(path, "amazon", sid, ["title"]))
    assert [i.id for i in items] == [f"amazon:{sid}#{n}" for n in (1, 2, 3)]
    assert all(isinstance(i, Record) and i.source == "amazon" for i in items)
    assert items[0].fields["title"] == "Product 1" and items[0].fields["input"] == {"url": URLS[0]}
    out = console.file.getvalue()
    assert sid in out and "3 records" in out
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))   # temp files gone
    assert_no_token(tmp_path, token)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "ndjson", "csv"])
def test_every_format_becomes_the_same_jsonl(fake, token, tmp_path, fmt):
    path = acquire(make_cfg(fake, format=fmt), tmp_path)
    [download] = [r for r in fake.requests if r["endpoint"] == "snapshot"]
    assert download["query"]["format"] == fmt
    lines = read_lines(path)
    assert [r["title"] for r in lines] == ["Product 1", "Product 2", "Product 3"]
    assert lines[1]["features"] == ["sturdy", "light"]        # CSV's JSON cells come back as lists
    assert lines[1]["input"] == {"url": URLS[1]}


def test_download_by_parts(fake, token, tmp_path):
    fake.make_records = lambda inputs: [{"title": f"t{i}", "input": inputs[0]} for i in range(2500)]
    path = acquire(make_cfg(fake, batch_size=1000, format="json"), tmp_path)
    parts = [r["query"] for r in fake.requests if r["endpoint"] == "snapshot"]
    assert [(q["batch_size"], q["part"]) for q in parts] == [("1000", "1"), ("1000", "2"), ("1000", "3")]
    assert fake.count("parts") == 1
    assert [r["title"] for r in read_lines(path)] == [f"t{i}" for i in range(2500)]
    assert not list(tmp_path.glob(".*"))


def test_parts_below_the_minimum_are_refused_before_any_request(fake, token, tmp_path):
    sid = fake.add_snapshot([{"title": "x"}])
    with pytest.raises(WebtuneError, match="batch_size=500.*at least 1000"):
        acquire(make_cfg(fake, snapshot_id=sid, batch_size=500), tmp_path)
    assert fake.count("snapshot") == 0


def test_discovery_parameters_go_in_the_query(fake, token, tmp_path):
    acquire(make_cfg(fake, type="discover_new", discover_by="keyword", limit_per_input=5,
                     include_errors=False, inputs=[{"keyword": "tumbler"}]), tmp_path)
    assert fake.triggers[0]["query"] == {"dataset_id": AMAZON, "include_errors": "false",
                                         "type": "discover_new", "discover_by": "keyword",
                                         "limit_per_input": "5"}


def test_inputs_from_a_jsonl_file_and_bare_urls(fake, token, tmp_path):
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"url": "https://www.amazon.com/dp/A"}\n\n{"url": "https://www.amazon.com/dp/B"}\n')
    acquire(make_cfg(fake, inputs=[], inputs_file=str(inputs)), tmp_path / "a")
    acquire(make_cfg(fake, inputs=["https://www.amazon.com/dp/C"]), tmp_path / "b")
    assert [t["inputs"] for t in fake.triggers] == [
        [{"url": "https://www.amazon.com/dp/A"}, {"url": "https://www.amazon.com/dp/B"}],
        [{"url": "https://www.amazon.com/dp/C"}]]


@pytest.mark.parametrize("over, message", [
    ({"inputs": []}, "no Bright Data inputs"),
    ({"inputs": [{"url": "https://x"}, 3]}, r"brightdata.inputs\[1\]: an input must be an object"),
    ({"inputs": [], "inputs_file": "/nonexistent/inputs.json"}, "inputs_file /nonexistent/inputs.json: cannot read"),
    ({"dataset_id": ""}, "dataset_id is empty"),
])
def test_bad_config_fails_before_triggering(fake, token, tmp_path, over, message):
    with pytest.raises(WebtuneError, match=message):
        acquire(make_cfg(fake, **over), tmp_path)
    assert fake.count("trigger") == 0


def test_unknown_progress_statuses_mean_in_progress(fake, token, tmp_path):
    fake.statuses = ["starting", "collecting", "digesting", "building", "ready"]
    acquire(make_cfg(fake), tmp_path)
    assert fake.count("progress") == 5 and fake.count("snapshot") == 1


def test_existing_snapshot_id_is_used_without_trigger(fake, token, tmp_path):
    sid = fake.add_snapshot([{"title": "given", "input": {}}])
    path = acquire(make_cfg(fake, snapshot_id=sid, inputs=[]), tmp_path)
    assert fake.count("trigger") == 0
    assert read_lines(path) == [{"title": "given", "input": {}}]
    assert json.loads((tmp_path / "snapshot.json").read_text())["snapshot_id"] == sid


def test_conflicting_snapshot_ids_are_refused(fake, token, tmp_path):
    (tmp_path / "snapshot.json").write_text(json.dumps({"snapshot_id": "s_one"}))
    with pytest.raises(WebtuneError, match="snapshot_id=s_two but .*snapshot.json records snapshot s_one"):
        acquire(make_cfg(fake, snapshot_id="s_two"), tmp_path)


def test_a_finished_download_needs_no_network_and_no_token(fake, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, fake.token)
    path = acquire(make_cfg(fake), tmp_path)
    monkeypatch.delenv(ENV)
    before = len(fake.requests)
    assert acquire(make_cfg(fake), tmp_path) == path
    assert len(fake.requests) == before


# ---------------------------------------------------------------- resume: one trigger in all
def test_poll_timeout_then_resume_triggers_once(fake, token, tmp_path):
    fake.polls_per_status = 10**6                              # never gets past "starting"
    with pytest.raises(WebtuneError) as err:
        acquire(make_cfg(fake, poll_timeout=0.2), tmp_path)
    sid = fake.triggers[0]["snapshot_id"]
    assert f"snapshot {sid} is still starting" in str(err.value) and "webtune resume" in str(err.value)
    fake.polls_per_status = 1
    path = acquire(make_cfg(fake), tmp_path)
    assert len(fake.triggers) == 1 and path.name == f"{sid}.jsonl.gz"
    assert len(read_lines(path)) == 3


KILLED_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from omegaconf import OmegaConf
    from webtune.sources import brightdata
    cfg = OmegaConf.create(sys.argv[1])
    brightdata.acquire(cfg, "amazon", Path(sys.argv[2]))
""")


def test_killed_while_polling_resumes_the_same_snapshot(fake, token, tmp_path):
    fake.polls_per_status = 10**6
    cfg = make_cfg(fake, poll_interval=0.05)
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, OmegaConf.to_yaml(cfg), str(tmp_path)],
                             env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while fake.count("progress") < 2:                       # snapshot.json is written, polling runs
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert (tmp_path / "snapshot.json").exists()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()
    fake.polls_per_status = 1
    path = acquire(make_cfg(fake), tmp_path)
    assert len(fake.triggers) == 1
    assert path.name == f"{fake.triggers[0]['snapshot_id']}.jsonl.gz" and len(read_lines(path)) == 3
    assert_no_token(tmp_path, token)


# ---------------------------------------------------------------- trigger errors: one POST, clear line
@pytest.mark.parametrize("status, body, headers, message", [
    (400, "This dataset is not allowed for API", {}, r"rejected the trigger \(400\): This dataset is not allowed"),
    (401, {"error": "Unauthorized"}, {}, f"refused the API token.*check the token in \\${ENV}"),
    (402, {"error": "Your current balance is insufficient ($220 is missing)"}, {}, r"\(402\).*\$220 is missing"),
    (403, "Access denied.", {}, "denied access"),
    (500, "Internal server error", {}, "answered 500.*not sent again because each trigger bills"),
    (502, "Unexpected error...", {}, r"answered 502.*continue it with source\.brightdata\.snapshot_id=<id>"),
])
def test_trigger_errors_are_never_retried(fake, token, tmp_path, status, body, headers, message):
    fake.fail("trigger", status=status, body=body, headers=headers, times=3)
    with pytest.raises(WebtuneError, match=message) as err:
        acquire(make_cfg(fake), tmp_path)
    assert fake.count("trigger") == 1                     # it bills: exactly one POST
    assert not (tmp_path / "snapshot.json").exists()
    assert str(err.value).startswith("source 'amazon': ") and "\n" not in str(err.value)
    assert token not in str(err.value)


def test_trigger_validation_error_names_the_field(fake, token, tmp_path):
    with pytest.raises(WebtuneError, match=r"400.*Invalid input provided.*field 'url': Value should match"):
        acquire(make_cfg(fake, inputs=[{"url": "http://amazon.com/x"}]), tmp_path)
    assert fake.count("trigger") == 1 and not fake.triggers


def test_unknown_dataset_plain_text_404(fake, token, tmp_path):
    with pytest.raises(WebtuneError, match=r"unknown Bright Data dataset 'gd_nope'.*dataset does not exist"):
        acquire(make_cfg(fake, dataset_id="gd_nope"), tmp_path)


def test_wrong_token_is_named_by_variable_never_by_value(fake, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "wrong-secret-XYZ789")
    with pytest.raises(WebtuneError) as err:
        acquire(make_cfg(fake), tmp_path)
    assert f"${ENV}" in str(err.value) and "wrong-secret-XYZ789" not in str(err.value)
    assert_no_token(tmp_path, "wrong-secret-XYZ789")


def test_a_body_echoing_the_token_is_redacted(fake, token, tmp_path):
    fake.fail("trigger", status=400, body=f"bad header Bearer {token}")
    with pytest.raises(WebtuneError) as err:
        acquire(make_cfg(fake), tmp_path)
    assert token not in str(err.value) and "***" in str(err.value)


def test_missing_token_variable(fake, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(WebtuneError, match=f"environment variable {ENV} .* is not set"):
        acquire(make_cfg(fake), tmp_path)
    assert fake.requests == []


# ---------------------------------------------------------------- progress faults
@pytest.mark.parametrize("fault", [
    dict(status=429, body="Too many requests", headers={"Retry-After": "0"}, times=2),
    dict(status=429, body="Too many requests", times=1),                 # no Retry-After: back-off
    dict(status=500, body="Internal server error", times=2),
    dict(status=502, body="Unexpected error...", times=3),
])
def test_progress_faults_are_retried(fake, token, tmp_path, fault):
    fake.fail("progress", **fault)
    path = acquire(make_cfg(fake), tmp_path)
    assert len(read_lines(path)) == 3 and len(fake.triggers) == 1
    assert fake.count("progress") == 3 + fault["times"]


def test_progress_429_gives_up_after_five_waits(fake, token, tmp_path):
    fake.fail("progress", status=429, body="Too many requests", headers={"Retry-After": "0"}, times=6)
    with pytest.raises(WebtuneError, match=r"kept answering 429 to the progress check \(Too many requests\) after 5"):
        acquire(make_cfg(fake), tmp_path)
    assert fake.count("progress") == 6                   # 1 + 5 retries, then stop: IP blocks at 25
    assert (tmp_path / "snapshot.json").exists()        # resumable


def test_progress_404_unknown_snapshot(fake, token, tmp_path):
    (tmp_path / "snapshot.json").write_text(json.dumps({"snapshot_id": "s_gone"}))
    with pytest.raises(WebtuneError, match=r"unknown Bright Data snapshot 's_gone'.*404: Snapshot not found"):
        acquire(make_cfg(fake), tmp_path)


def test_failed_snapshot_reports_its_message(fake, token, tmp_path):
    fake.next_failure = "No data found in discovery"
    with pytest.raises(WebtuneError, match=r"snapshot s_\w+ failed: No data found in discovery"):
        acquire(make_cfg(fake), tmp_path)
    assert fake.count("snapshot") == 0


# ---------------------------------------------------------------- download faults
@pytest.mark.parametrize("fault", [
    dict(status=202, body={"status": "building", "message": "Snapshot is building, try again in 10s"}),
    dict(status=409, body={"error": "Snapshot is not ready for download"}),
    dict(status=200, body={"status": "running", "message": "Snapshot is not ready yet, try again in 10s"}),
    dict(status=500, body="Internal server error"),
    dict(status=502, body="Unexpected error..."),
    dict(kind="drop"),
    dict(kind="truncate"),
    dict(kind="cut"),
])
@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_download_faults_are_retried(fake, token, tmp_path, fault, fmt):
    fake.fail("snapshot", times=2, **fault)
    path = acquire(make_cfg(fake, format=fmt), tmp_path)
    assert fake.count("snapshot") == 3 and len(fake.triggers) == 1
    assert [r["title"] for r in read_lines(path)] == ["Product 1", "Product 2", "Product 3"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_chunked_download(fake, token, tmp_path):
    fake.chunked = True
    fake.make_records = lambda inputs: [{"title": "x" * 3000, "n": i, "input": {}} for i in range(50)]
    path = acquire(make_cfg(fake), tmp_path)
    assert [r["n"] for r in read_lines(path)] == list(range(50))


def test_download_that_keeps_dropping_fails_clearly_and_resumes(fake, token, tmp_path):
    fake.fail("snapshot", kind="drop", times=5)
    with pytest.raises(WebtuneError, match="downloading snapshot .* failed 5 times.*resume the run"):
        acquire(make_cfg(fake), tmp_path)
    assert not list(tmp_path.glob("*.gz")) and not list(tmp_path.glob(".*.tmp"))
    path = acquire(make_cfg(fake), tmp_path)
    assert len(read_lines(path)) == 3 and len(fake.triggers) == 1


def test_download_404_and_401_are_not_retried(fake, token, tmp_path):
    fake.fail("snapshot", status=404, body="Snapshot does not exist")
    with pytest.raises(WebtuneError, match=r"unknown Bright Data snapshot.*404: Snapshot does not exist"):
        acquire(make_cfg(fake), tmp_path / "a")
    fake.fail("snapshot", status=401, body={"error": "User authentication is required"})
    with pytest.raises(WebtuneError, match=r"401: User authentication is required.*\$" + ENV):
        acquire(make_cfg(fake), tmp_path / "b")
    assert fake.count("snapshot") == 2


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_empty_snapshot(fake, token, tmp_path, fmt):
    fake.make_records = lambda inputs: []
    path = acquire(make_cfg(fake, format=fmt), tmp_path)
    assert read_lines(path) == []
    assert list(brightdata.iter_records(path, "amazon", "s_x", ["title"])) == []


def test_snapshot_is_empty_400(fake, token, tmp_path):
    fake.fail("snapshot", status=400, body="Snapshot is empty")
    path = acquire(make_cfg(fake), tmp_path)
    assert read_lines(path) == []


def test_failed_part_is_fetched_again_and_finished_parts_are_kept(fake, token, tmp_path):
    fake.make_records = lambda inputs: [{"title": f"t{i}", "input": {}} for i in range(2100)]
    fake.fail("snapshot", kind="pass")                                  # part 1 arrives
    fake.fail("snapshot", status=404, body={"error": "Snapshot not found"})   # part 2 does not
    cfg = make_cfg(fake, batch_size=1000)
    with pytest.raises(WebtuneError, match="404"):
        acquire(cfg, tmp_path)
    assert len(list(tmp_path.glob(".*.p1.jsonl.gz"))) == 1
    path = acquire(cfg, tmp_path)
    assert [q["query"]["part"] for q in fake.requests if q["endpoint"] == "snapshot"] == ["1", "2", "2", "3"]
    assert [r["title"] for r in read_lines(path)] == [f"t{i}" for i in range(2100)]
    assert not list(tmp_path.glob(".*"))


# ---------------------------------------------------------------- records
def write_gz(path, lines):
    with gzip.open(path, "wb") as fh:
        for line in lines:
            fh.write(line + b"\n")
    return path


def test_iter_records_rejects_errors_malformed_and_non_objects(tmp_path):
    path = write_gz(tmp_path / "s_abc.jsonl.gz", [
        json.dumps({"title": "ok", "input": {"url": "https://a"}}).encode(),
        json.dumps({"timestamp": "t", "input": {"url": "https://www.x.com/dead"},
                    "error": "The navigation resulted in a dead page (404 status code)",
                    "error_code": "dead_page"}).encode(),
        b'{"title": "cut',
        b"[1, 2]",
        b"",
        json.dumps({"error": "Something odd", "input": {"keyword": "k"}}).encode(),
        json.dumps({"title": "has a warning", "error": "partial", "input": {}}).encode(),
        json.dumps({"title": "null code", "error_code": None}).encode(),
    ])
    items = list(brightdata.iter_records(path, "amazon", "s_abc", ["title", "description"]))
    assert [(i.id, type(i).__name__, getattr(i, "reason", None)) for i in items] == [
        ("amazon:s_abc#1", "Record", None),
        ("amazon:s_abc#2", "Rejection", "brightdata_error:dead_page"),
        ("amazon:s_abc#3", "Rejection", "malformed_json"),
        ("amazon:s_abc#4", "Rejection", "not_an_object"),
        ("amazon:s_abc#5", "Rejection", "blank_line"),
        ("amazon:s_abc#6", "Rejection", "brightdata_error:unknown"),
        ("amazon:s_abc#7", "Record", None),
        ("amazon:s_abc#8", "Record", None),
    ]
    assert items[1].detail == "The navigation resulted in a dead page (404 status code) (input: https://www.x.com/dead)"
    assert "line 3" in items[2].detail
    assert items[5].detail == 'Something odd (input: {"keyword":"k"})'


def test_error_records_from_the_server_reach_the_ledger_as_rejections(fake, token, tmp_path):
    def with_errors(inputs):
        good = [{"title": "fine", "description": "d", "input": inputs[0]}]
        bad = [{"timestamp": "t", "input": inputs[1], "error": "dead page", "error_code": "dead_page"}]
        return good + bad
    fake.make_records = with_errors
    path = acquire(make_cfg(fake), tmp_path)
    state = json.loads((tmp_path / "snapshot.json").read_text())
    assert state["progress"]["error_codes"] == {"dead_page": 1}
    sid = state["snapshot_id"]
    items = list(brightdata.iter_records(path, "amazon", sid, ["title"]))
    assert isinstance(items[0], Record)
    assert isinstance(items[1], Rejection) and items[1].reason == "brightdata_error:dead_page"
    assert URLS[1] in items[1].detail


def test_damaged_download_is_a_clear_error(tmp_path):
    path = tmp_path / "s_bad.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"title": "a"}\n' * 100)[:40])
    with pytest.raises(WebtuneError, match="s_bad.jsonl.gz is damaged.*delete it"):
        list(brightdata.iter_records(path, "amazon", "s_bad", ["title"]))


def test_fake_serialises_csv_that_the_client_reads_back():
    assert serialise([{"a": 1, "b": None, "c": [1]}], "csv").decode().splitlines() == ["a,b,c", '1,,[1]']


# ---------------------------------------------------------------- the shipped configs
CONF = SHIPPED / "conf" / "source"


@pytest.mark.parametrize("name, dataset_id, primary", [
    ("amazon", "gd_l7q7dkf244hwjntr0", ["title", "description"]),
    ("youtube", "gd_lk56epmy2i5g7lzu0k", ["transcript"]),
    ("linkedin", "gd_lyy3tktm25m4avu764", ["post_text"]),
    ("reddit", "gd_lvz8ah06191smkebj4", ["title", "description"]),
])
def test_shipped_configs_run_through_the_sources_dispatcher(fake, token, tmp_path, name, dataset_id, primary):
    from webtune import sources
    from webtune.config import SourceConfig
    cfg = OmegaConf.merge(OmegaConf.structured(SourceConfig), OmegaConf.load(CONF / f"brightdata_{name}.yaml"),
                          {"brightdata": {"base_url": fake.base_url, "api_key_env": ENV, "mode": "async",
                                          "poll_interval": 0.01, "timeout": 5.0}})
    assert cfg.kind == "brightdata" and cfg.name == name
    assert cfg.brightdata.dataset_id == dataset_id and list(cfg.brightdata.primary_fields) == primary
    fake.make_records = lambda inputs: [{**{f: f"{f} text" for f in primary}, "input": i} for i in inputs]
    paths = sources.acquire(cfg, tmp_path, console=quiet())
    assert fake.triggers[-1]["query"]["dataset_id"] == dataset_id
    items = list(sources.iter_records(cfg, paths))
    sid = fake.triggers[-1]["snapshot_id"]
    assert [i.id for i in items] == [f"{name}:{sid}#{n}" for n in range(1, len(cfg.brightdata.inputs) + 1)]
    assert all(isinstance(i, Record) and i.fields[primary[0]] == f"{primary[0]} text" for i in items)


def test_polling_gives_up_when_the_server_keeps_failing(fake, token, tmp_path):
    fake.fail("progress", status=503, body="Service Unavailable", headers={"Retry-After": "0"}, times=1000)
    with pytest.raises(WebtuneError, match=r"no usable answer from .*/progress/s_\w+ in 10 polls"):
        acquire(make_cfg(fake), tmp_path)
    assert fake.count("progress") == 40                 # 10 polls, each 1 + 3 retries
    assert (tmp_path / "snapshot.json").exists()


# ---------------------------------------------------------------- 429: waited out, one budget for the process
def test_429_on_the_first_trigger_is_waited_out(fake, token, tmp_path):
    fake.fail("trigger", status=429, body="You have too many running jobs for this dataset.")
    console = quiet()
    path = acquire(make_cfg(fake), tmp_path, console)
    assert fake.count("trigger") == 2 and len(fake.triggers) == 1        # refused once, then one collection
    assert path.name == f"{fake.triggers[0]['snapshot_id']}.jsonl.gz" and len(read_lines(path)) == 3
    out = console.file.getvalue()
    assert "answered 429 to the trigger (You have too many running jobs for this dataset.)" in out
    assert "waiting 0.01s, then retry 1 of 5" in out


def test_429_waits_are_retry_after_else_doubling(fake, token, tmp_path):
    fake.fail("trigger", status=429, body={"error": "Maximum limit of 100 jobs"}, headers={"Retry-After": "1"})
    fake.fail("trigger", status=429, body="You have too many running jobs for this dataset.", times=2)
    console = quiet()
    start = time.monotonic()
    acquire(make_cfg(fake), tmp_path, console)
    assert time.monotonic() - start >= 1.0                                 # the server's Retry-After
    waits = [line.split("waiting ")[1].split("s,")[0] for line in console.file.getvalue().splitlines()
             if "waiting" in line]
    assert waits == ["1", "0.02", "0.04"]                                  # then base x 2, x 4
    assert fake.count("trigger") == 4 and len(fake.triggers) == 1


def test_429_budget_covers_every_request_and_stops_before_the_block(fake, token, tmp_path):
    fake.fail("trigger", status=429, body="You have too many running jobs for this dataset.", times=5)
    fake.fail("progress", status=429, body="Too many requests", times=10)
    with pytest.raises(WebtuneError, match=r"that is 10 429s from 127\.0\.0\.1:\d+ within 5 minutes.*stopped") as err:
        acquire(make_cfg(fake), tmp_path)
    assert fake.count("trigger") == 6 and len(fake.triggers) == 1         # 5 waits, then the collection
    assert fake.count("progress") == 5                                     # the 10th 429 of the process stops it
    assert "\n" not in str(err.value) and (tmp_path / "snapshot.json").exists()


def test_trigger_without_an_answer_is_not_sent_again(fake, token, tmp_path):
    fake.fail("trigger", kind="close")
    with pytest.raises(WebtuneError, match=r"got no answer \(ConnectionError\).*not sent again.*"
                                           r"source\.brightdata\.snapshot_id=<id>"):
        acquire(make_cfg(fake), tmp_path)
    assert fake.count("trigger") == 1 and not (tmp_path / "snapshot.json").exists()


# ---------------------------------------------------------------- sync scrapes
FIVE = [f"https://www.amazon.com/dp/B0SYNC000{i}" for i in range(5)]


def test_sync_scrape_of_five_urls(fake, token, tmp_path):
    console = quiet()
    path = acquire(make_cfg(fake, mode="auto", inputs=FIVE), tmp_path, console)
    assert fake.count("scrape") == 1 and fake.count("trigger") == 0 and fake.count("progress") == 0
    [scrape] = [r for r in fake.requests if r["endpoint"] == "scrape"]
    assert scrape["query"]["dataset_id"] == AMAZON and scrape["query"]["format"] == "json"
    assert fake.triggers[0]["inputs"] == [{"url": u} for u in FIVE]
    state = json.loads((tmp_path / "snapshot.json").read_text())
    assert state["mode"] == "sync" and path.name == f"{state['snapshot_id']}.jsonl.gz"
    items = list(brightdata.iter_records(path, "amazon", state["snapshot_id"], ["title"]))
    assert [i.fields["url"] for i in items] == FIVE
    assert [i.id for i in items] == [f"amazon:{state['snapshot_id']}#{n}" for n in range(1, 6)]
    before = len(fake.requests)
    assert acquire(make_cfg(fake, mode="auto", inputs=FIVE), tmp_path) == path     # resume: nothing sent
    assert len(fake.requests) == before


def test_sync_scrape_past_the_minute_is_polled_as_a_snapshot(fake, token, tmp_path):
    fake.scrape_times_out = True
    console = quiet()
    path = acquire(make_cfg(fake, mode="sync", inputs=FIVE), tmp_path, console)
    sid = fake.triggers[0]["snapshot_id"]
    assert fake.count("scrape") == 1 and fake.count("trigger") == 0
    assert fake.count("progress") == 3 and path.name == f"{sid}.jsonl.gz" and len(read_lines(path)) == 5
    assert json.loads((tmp_path / "snapshot.json").read_text())["snapshot_id"] == sid
    assert "did not finish within a minute" in console.file.getvalue()


def test_auto_mode_triggers_above_twenty_inputs_and_sync_refuses_them(fake, token, tmp_path):
    many = [f"https://www.amazon.com/dp/B0MANY{i:04d}" for i in range(21)]
    acquire(make_cfg(fake, mode="auto", inputs=many), tmp_path / "a")
    assert fake.count("trigger") == 1 and fake.count("scrape") == 0
    with pytest.raises(WebtuneError, match="mode=sync takes at most 20 inputs \\(21 given\\)"):
        acquire(make_cfg(fake, mode="sync", inputs=many), tmp_path / "b")
    assert fake.count("scrape") == 0


def test_sync_scrape_5xx_is_not_sent_again(fake, token, tmp_path):
    fake.fail("scrape", status=502, body="Unexpected error...")
    with pytest.raises(WebtuneError, match="answered 502 to the sync scrape.*not sent again"):
        acquire(make_cfg(fake, mode="sync"), tmp_path)
    assert fake.count("scrape") == 1 and not (tmp_path / "snapshot.json").exists()


# ---------------------------------------------------------------- cost before paying
def test_the_plan_is_shown_before_the_trigger(fake, token, tmp_path):
    console = quiet()
    acquire(make_cfg(fake, price_per_1k=1.5, limit_multiple_results=2), tmp_path, console)
    out = console.file.getvalue()
    assert ("amazon: Bright Data trigger (collection): 3 inputs; caps: limit_multiple_results=2; "
            "records: at most 2; cost: about $0.0030 at $1.5 per 1,000 records (an estimate)") in out
    assert fake.triggers[0]["query"]["limit_multiple_results"] == "2"


@pytest.mark.parametrize("over, message", [
    ({"max_cost": 1.0}, r"max_cost=1 needs a price to compare with: set source\.brightdata\.price_per_1k"),
    ({"max_cost": 0.001, "price_per_1k": 1.5}, r"would cost about \$0\.0045 \(3 records at \$1\.5/1k\), over "
                                               r"source\.brightdata\.max_cost=0\.001"),
    ({"max_records": 2}, "would deliver about 3 records, over source.brightdata.max_records=2"),
    ({"max_records": 100, "type": "discover_new", "discover_by": "keyword", "inputs": [{"keyword": "mug"}]},
     r"no bound on its records: set source\.brightdata\.limit_per_input or source\.brightdata\.limit_multiple"),
    ({"max_records": 9, "type": "discover_new", "discover_by": "keyword", "limit_per_input": 5,
      "inputs": [{"keyword": "mug"}, {"keyword": "cup"}]}, "would deliver up to 10 records"),
])
def test_bounds_refuse_before_any_request_that_bills(fake, token, tmp_path, over, message):
    with pytest.raises(WebtuneError, match=message) as err:
        acquire(make_cfg(fake, **over), tmp_path)
    assert fake.requests == [] and "\n" not in str(err.value)
    assert not (tmp_path / "snapshot.json").exists()


def test_bounds_that_hold_let_the_collection_start(fake, token, tmp_path):
    acquire(make_cfg(fake, max_cost=0.01, price_per_1k=1.5, max_records=3), tmp_path)
    assert len(fake.triggers) == 1


# ---------------------------------------------------------------- Ctrl-C while a collection runs
def test_ctrl_c_then_cancel_cancels_the_collection(fake, token, tmp_path):
    from tests.sigint import interrupt_main_when
    fake.polls_per_status = 10**6
    asked = []
    interrupt_main_when(lambda: fake.count("progress") >= 2)
    with pytest.raises(WebtuneError, match="cancelled Bright Data collection s_\\w+ at your request"):
        acquire(make_cfg(fake, poll_interval=0.02), tmp_path, ask_cancel=lambda sid: asked.append(sid) or True)
    sid = fake.triggers[0]["snapshot_id"]
    assert asked == [sid] and fake.cancels == [sid]
    assert json.loads((tmp_path / "snapshot.json").read_text())["cancelled_at"]
    with pytest.raises(WebtuneError, match=f"collection {sid} was cancelled at your request.*delete"):
        acquire(make_cfg(fake), tmp_path)
    assert len(fake.triggers) == 1


def test_ctrl_c_without_a_terminal_leaves_it_running_and_resume_continues(fake, token, tmp_path, monkeypatch):
    from tests.sigint import interrupt_main_when
    monkeypatch.setattr("sys.stdin", io.StringIO(""))          # no terminal to ask on
    fake.polls_per_status = 10**6
    console = quiet()
    interrupt_main_when(lambda: fake.count("progress") >= 2)
    with pytest.raises(WebtuneError, match=r"keeps running at Bright Data.*snapshot\.json.*webtune resume"):
        acquire(make_cfg(fake, poll_interval=0.02), tmp_path, console)
    assert "no terminal to ask" in console.file.getvalue() and fake.cancels == []
    fake.polls_per_status = 1
    path = acquire(make_cfg(fake), tmp_path)
    assert len(fake.triggers) == 1 and len(read_lines(path)) == 3


# ---------------------------------------------------------------- custom_output_fields and the cache identity
def test_custom_output_fields_are_sent_with_what_the_ledger_needs(fake, token, tmp_path):
    path = acquire(make_cfg(fake, custom_output_fields=["brand"]), tmp_path)
    assert fake.triggers[0]["query"]["custom_output_fields"] == "brand|description|error|error_code|input|title"
    assert set(read_lines(path)[0]) == {"brand", "description", "input", "title"}    # the fake kept only those


def test_cache_identity_changes_with_the_request_only(fake, token):
    base = brightdata.cache_identity(make_cfg(fake))
    assert base == brightdata.cache_identity(make_cfg(fake, poll_interval=5, timeout=9, api_key_env="OTHER"))
    for over in ({"inputs": URLS[:2]}, {"dataset_id": "gd_lk56epmy2i5g7lzu0k"}, {"limit_per_input": 3},
                 {"custom_output_fields": ["brand"]}, {"mode": "sync"}, {"limit_multiple_results": 9}):
        assert brightdata.cache_identity(make_cfg(fake, **over)) != base, over
    assert json.dumps(base)                                              # JSON-able for the cache key


def test_a_cached_superset_of_fields_covers_a_smaller_ask(fake, token):
    ident = lambda fields: brightdata.cache_identity(make_cfg(fake, custom_output_fields=fields))  # noqa: E731
    wide, narrow, all_fields = ident(["brand", "features"]), ident(["brand"]), ident([])
    assert all_fields["custom_output_fields"] is None
    assert brightdata.cache_covers(narrow, wide) and brightdata.cache_covers(narrow, all_fields)
    assert not brightdata.cache_covers(wide, narrow) and not brightdata.cache_covers(all_fields, wide)
    other = brightdata.cache_identity(make_cfg(fake, custom_output_fields=["brand", "features"], inputs=URLS[:1]))
    assert not brightdata.cache_covers(narrow, other)


def template(name):
    from webtune.config import TemplateConfig
    return OmegaConf.merge(OmegaConf.structured(TemplateConfig), OmegaConf.load(SHIPPED / "conf" / "template" / f"{name}.yaml"))


LEDGER = ["error", "error_code", "input"]
GROUP = ["url"]   # the shipped scraper sources split by page (group_field: url), so the url is collected too


@pytest.mark.parametrize("name, source, fields", [
    # written out by hand from the shipped Jinja files, task `fields` and input schemas
    ("product_description", "amazon", ["brand", "description", "features", "title"]),
    ("docs_qa", "amazon", ["lead", "level", "outline", "page_title", "part", "parts", "section_path",
                           "section_title", "text", "title"]),
    ("social_post", "linkedin", ["community_name", "description", "hashtags", "post_text", "title"]),
    ("transcript_summary", "youtube", ["description", "text", "time_range", "title", "transcript", "windows"]),
])
def test_custom_output_fields_of_each_shipped_template(fake, name, source, fields):
    from webtune.prepare.fields import fields_read
    from webtune.config import SourceConfig
    src = OmegaConf.merge(OmegaConf.structured(SourceConfig), OmegaConf.load(CONF / f"brightdata_{source}.yaml"))
    derived = brightdata.with_output_fields(src, fields_read(template(name))).brightdata.custom_output_fields
    expected = sorted(set(fields) | set(LEDGER) | set(GROUP) | set(src.brightdata.primary_fields))
    assert list(derived) == expected
    assert brightdata.with_output_fields(src, None).brightdata.custom_output_fields == []   # unknown: all


def test_a_template_that_includes_another_file_asks_for_every_field(fake, tmp_path):
    from webtune.prepare.fields import fields_read
    from webtune.config import SourceConfig, TemplateConfig
    (tmp_path / "part.j2").write_text("{{ secret_field }}")
    (tmp_path / "user.j2").write_text("{% include 'part.j2' %} {{ title }}")
    tpl = OmegaConf.merge(OmegaConf.structured(TemplateConfig), {"name": "t", "tasks": [
        {"name": "t", "user": str(tmp_path / "user.j2"), "assistant": str(tmp_path / "user.j2")}]})
    src = OmegaConf.merge(OmegaConf.structured(SourceConfig), {"kind": "brightdata", "name": "x"})
    assert brightdata.with_output_fields(src, fields_read(tpl)).brightdata.custom_output_fields == []
