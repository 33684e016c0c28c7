"""The OpenAI fine-tuning backend: the real `openai` SDK over real HTTP against a stateful fake
of our own on 127.0.0.1, whose every response is validated against OpenAI's published spec."""
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from openai import OpenAI
from rich.console import Console

from tests.fakes.openai_server import FakeOpenAI, SpecValidator, chat_reply, find_spec
from webtune.train import openai_ft
from webtune.config import ModelConfig
from webtune.errors import WebtuneError
from webtune.paths import SHIPPED

ENV = "WEBTUNE_TEST_OPENAI_KEY"
KEY = "sk-webtune-test-secret-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]
BASE_MODEL = "gpt-4o-mini-2024-07-18"


def example(i: int) -> dict:
    return {"messages": [
        {"role": "system", "content": "You write short, accurate product descriptions."},
        {"role": "user", "content": f"Write a product description.\nTitle: Trail Bottle {i}\nFeatures:\n- {500 + i} ml\n- BPA-free"},
        {"role": "assistant", "content": f"The Trail Bottle {i} holds {500 + i} ml and is BPA-free, made for long hikes."},
    ]}


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="session")
def spec():
    path = find_spec()
    return SpecValidator(path) if path else None


@pytest.fixture
def fake(spec):
    with FakeOpenAI(api_key=KEY) as server:
        yield server
    if spec is not None:  # the fake must not drift from the real API
        problems = [e for name, body in server.responses for e in spec.errors(name, body)]
        problems += [e for body in server.create_bodies for e in spec.errors("CreateFineTuningJobRequest", body)]
        assert not problems, problems[:5]


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    run = tmp_path / "runs" / "2026-01-01_00-00-00_products"
    write_jsonl(run / "data" / "train.jsonl", [example(i) for i in range(12)])
    write_jsonl(run / "data" / "val.jsonl", [example(i) for i in range(100, 103)])
    return run


def make_cfg(fake: FakeOpenAI, **overrides):
    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), {
        "kind": "openai", "name": "gpt-4o-mini", "name_or_path": BASE_MODEL, "api_key_env": ENV,
        "base_url": fake.base_url, "poll_interval": 0.01, "suffix": "webtune-test",
        "n_epochs": 2, "learning_rate_multiplier": 0.5, "metadata": {"domain": "products"},
        "train": {"seed": 7}, **overrides})
    return OmegaConf.create({"name": "products", "model": model})


def console():
    return Console(file=io.StringIO(), width=200, force_terminal=False, soft_wrap=True)   # no wrapping: tmp paths vary in length


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# ---------------------------------------------------------------- happy path
def test_happy_path_uploads_creates_watches_and_records(fake, run_dir):
    out = console()
    metrics = openai_ft.train(make_cfg(fake), run_dir, console=out)

    assert fake.job_creations == 1
    body = fake.create_bodies[0]
    assert body["model"] == BASE_MODEL and body["suffix"] == "webtune-test" and body["seed"] == 7
    assert body["method"] == {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}}}
    train_sha = hashlib.sha256((run_dir / "data" / "train.jsonl").read_bytes()).hexdigest()
    assert body["metadata"] == {"domain": "products", "webtune_run": run_dir.name, "webtune_data": train_sha[:32]}
    uploaded = {f["filename"]: f for f in fake.files.values() if f["purpose"] == "fine-tune"}
    assert set(uploaded) == {"train.jsonl", "val.jsonl"}
    assert fake.file_contents[body["training_file"]] == (run_dir / "data" / "train.jsonl").read_bytes()
    assert body["validation_file"] == uploaded["val.jsonl"]["id"]

    job_record = json.loads((run_dir / "model" / "openai_job.json").read_text())
    assert job_record["job_id"].startswith("ftjob-") and job_record["base_model"] == BASE_MODEL
    assert job_record["training_file"] == body["training_file"]

    model_record = json.loads((run_dir / "model" / "openai_model.json").read_text())
    assert model_record["fine_tuned_model"].startswith(f"ft:{BASE_MODEL}:")
    assert model_record["job_id"] == job_record["job_id"] and model_record["base_model"] == BASE_MODEL
    assert [c["step_number"] for c in model_record["checkpoints"]] == [2, 4]
    assert model_record["checkpoints"][-1]["model"].endswith("ckpt-step-4")
    assert model_record["trained_tokens"] > 0 and model_record["api_key_env"] == ENV

    assert metrics["fine_tuned_model"] == model_record["fine_tuned_model"]
    assert [p["step"] for p in metrics["loss_curve"]] == [1, 2, 3, 4]
    assert metrics["train_loss"] == pytest.approx(0.4) and metrics["loss_curve"][0]["eval_loss"] == pytest.approx(1.1)
    assert metrics["estimated_billed_tokens"] > 0 and metrics["estimated_cost_usd"] > 0

    text = out.file.getvalue()
    assert "billed training tokens" in text and "approximation" in text
    assert "Files validated" in text and "succeeded" in text
    # created validating_files; then one retrieve each: queued, 4 running steps, succeeded
    assert fake.count("GET", r"/fine_tuning/jobs/ftjob-\d+$") == 1 + 4 + 1


def test_key_never_reaches_the_run_dir_or_the_console(fake, run_dir):
    out = console()
    openai_ft.train(make_cfg(fake), run_dir, console=out)
    openai_ft.chat(run_dir / "model", [{"role": "user", "content": "hi"}])
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in out.file.getvalue()


def test_missing_key_env_is_one_clear_line(fake, run_dir, monkeypatch):
    monkeypatch.delenv(ENV)
    with pytest.raises(WebtuneError, match=f"environment variable {ENV} is not set"):
        openai_ft.train(make_cfg(fake), run_dir, console=console())
    assert fake.requests == []


def test_wrong_key_is_one_line_without_the_key(fake, run_dir, monkeypatch):
    monkeypatch.setenv(ENV, "sk-wrong")
    with pytest.raises(WebtuneError) as info:
        openai_ft.train(make_cfg(fake), run_dir, console=console())
    message = str(info.value)
    assert "401" in message and ENV in message and "\n" not in message and "sk-wrong" not in message


# ---------------------------------------------------------------- validation before spending money
def test_bad_data_stops_before_any_upload(fake, run_dir):
    rows = [example(i) for i in range(12)]
    rows[6]["messages"][2]["role"] = "bot"
    write_jsonl(run_dir / "data" / "train.jsonl", rows)
    with pytest.raises(WebtuneError) as info:
        openai_ft.train(make_cfg(fake), run_dir, console=console())
    message = str(info.value)
    assert "train.jsonl" in message and "line 7" in message and "messages[2].role" in message
    assert "\n" not in message
    assert fake.requests == [] and not (run_dir / "model").exists()


def test_bad_validation_file_also_stops(fake, run_dir):
    (run_dir / "data" / "val.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(WebtuneError, match=r"val.jsonl: line 1: messages: .*example_missing_assistant_message"):
        openai_ft.train(make_cfg(fake), run_dir, console=console())
    assert fake.requests == []


def test_empty_validation_file_is_not_uploaded(fake, run_dir):
    (run_dir / "data" / "val.jsonl").write_text("")
    openai_ft.train(make_cfg(fake), run_dir, console=console())
    assert fake.create_bodies[0]["validation_file"] is None
    assert [f["filename"] for f in fake.files.values() if f["purpose"] == "fine-tune"] == ["train.jsonl"]


# ---------------------------------------------------------------- failure, cancel, refusal
def test_failed_job_is_one_line_with_code_message_param(fake, run_dir):
    fake.fail_jobs = {"code": "invalid_training_file", "param": "training_file",
                      "message": "The job failed due to an invalid training file."}
    with pytest.raises(WebtuneError) as info:
        openai_ft.train(make_cfg(fake), run_dir, console=console())
    message = str(info.value)
    assert "\n" not in message
    assert "failed: invalid_training_file: The job failed due to an invalid training file. (param: training_file)" in message
    assert not (run_dir / "model" / "openai_model.json").exists()


def test_job_cancelled_elsewhere_ends_the_run(fake, run_dir):
    fake.hold_running = True

    def cancel_when_running():
        wait_for(lambda: any(j["status"] == "running" for j in fake.jobs.values()))
        fake.cancel(next(iter(fake.jobs)))
    threading.Thread(target=cancel_when_running, daemon=True).start()
    with pytest.raises(WebtuneError, match=r"ftjob-\d+ was cancelled"):
        openai_ft.train(make_cfg(fake), run_dir, console=console())


def interrupt_when_running(fake: FakeOpenAI) -> threading.Thread:
    """A real Ctrl-C (SIGINT, even where the suite runs with SIGINT ignored) once the job is running."""
    from tests.sigint import interrupt_main_when
    return interrupt_main_when(lambda: any(j["status"] == "running" for j in fake.jobs.values()), timeout=20.0)


def test_ctrl_c_then_cancel_cancels_the_job(fake, run_dir):
    fake.hold_running = True
    asked = []
    interrupt_when_running(fake)
    with pytest.raises(WebtuneError, match="cancelled OpenAI fine-tuning job"):
        openai_ft.train(make_cfg(fake), run_dir, console=console(), ask_cancel=lambda j: asked.append(j) or True)
    job = next(iter(fake.jobs.values()))
    assert asked == [job["id"]] and job["status"] == "cancelled"
    assert fake.count("POST", r"/cancel$") == 1


def test_ctrl_c_then_leave_running_and_resume_creates_no_second_job(fake, run_dir):
    fake.hold_running = True
    interrupt_when_running(fake)
    with pytest.raises(WebtuneError, match="keeps running") as info:
        openai_ft.train(make_cfg(fake), run_dir, console=console(), ask_cancel=lambda j: False)
    assert str(run_dir) in str(info.value)
    job = next(iter(fake.jobs.values()))
    assert job["status"] == "running" and fake.count("POST", r"/cancel$") == 0

    fake.hold_running = False
    out = console()
    metrics = openai_ft.train(make_cfg(fake), run_dir, console=out)
    assert fake.job_creations == 1 and metrics["job_id"] == job["id"]
    assert fake.count("POST", r"/v1/files$") == 2      # nothing uploaded twice
    assert "resuming job" in out.file.getvalue()


def test_refused_new_job_is_one_clear_line(fake, run_dir):
    fake.refuse_create = (403, "fine_tuning_unavailable",
                          "Self-serve fine-tuning is no longer available for this organization.")
    with pytest.raises(WebtuneError) as info:
        openai_ft.train(make_cfg(fake), run_dir, console=console())
    message = str(info.value)
    assert "\n" not in message and "refused to create the fine-tuning job" in message
    assert "fine_tuning_unavailable" in message and "2027-01-06" in message
    assert fake.job_creations == 0 and not (run_dir / "model" / "openai_job.json").exists()


# ---------------------------------------------------------------- transient errors: the SDK's own retries
def test_429_and_500_are_retried_by_the_sdk(fake, run_dir):
    fake.inject("POST", r"^/v1/files$", 429)
    fake.inject("POST", r"^/v1/fine_tuning/jobs$", 500)
    fake.inject("GET", r"^/v1/fine_tuning/jobs/ftjob-\d+$", 500, times=2)
    fake.inject("GET", r"/events$", 429)
    metrics = openai_ft.train(make_cfg(fake), run_dir, console=console())
    assert metrics["fine_tuned_model"]
    assert fake.count("POST", r"^/v1/files$", 429) == 1
    assert fake.count("POST", r"^/v1/fine_tuning/jobs$", 500) == 1
    assert fake.count("GET", r"^/v1/fine_tuning/jobs/ftjob-\d+$", 500) == 2
    assert fake.count("GET", r"/events$", 429) == 1
    assert fake.job_creations == 1


def test_persistent_500_gives_up_after_the_sdk_retries(fake, run_dir):
    fake.inject("GET", r"^/v1/fine_tuning/jobs/ftjob-\d+$", 500, times=3)
    with pytest.raises(WebtuneError) as info:
        openai_ft.train(make_cfg(fake), run_dir, console=console())
    message = str(info.value)
    assert "500" in message and "watching job" in message and "\n" not in message
    assert fake.count("GET", r"^/v1/fine_tuning/jobs/ftjob-\d+$", 500) == 3   # 1 try + the SDK's 2 retries
    # the job id was kept: a rerun resumes it instead of creating another
    openai_ft.train(make_cfg(fake), run_dir, console=console())
    assert fake.job_creations == 1


# ---------------------------------------------------------------- killed while polling
KILL_SCRIPT = """
import sys
from pathlib import Path
from omegaconf import OmegaConf
from webtune.train import openai_ft
from webtune.config import ModelConfig
cfg = OmegaConf.create({"name": "products",
                        "model": OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(sys.argv[1]))})
openai_ft.train(cfg, Path(sys.argv[2]))
"""


def test_killed_while_polling_resumes_the_same_job(fake, run_dir, tmp_path):
    fake.hold_running = True
    model_yaml = tmp_path / "model.yaml"
    model_yaml.write_text(OmegaConf.to_yaml(make_cfg(fake).model))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(model_yaml), str(run_dir)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        polled = wait_for(lambda: any(j["status"] == "running" for j in fake.jobs.values())
                          and fake.count("GET", r"/events$") >= 4, timeout=60)
        assert polled, proc.stderr.read().decode() if proc.poll() is not None else "no polling seen"
    finally:
        proc.kill()
        proc.wait()
    assert (run_dir / "model" / "openai_job.json").exists()
    assert fake.job_creations == 1

    fake.hold_running = False
    metrics = openai_ft.train(make_cfg(fake), run_dir, console=console())
    assert fake.job_creations == 1                      # the fake's counter: no second job
    assert metrics["job_id"] == next(iter(fake.jobs))
    assert fake.count("POST", r"/v1/files$") == 2


def test_crash_between_create_and_record_adopts_the_runs_job(fake, run_dir):
    """The job exists at OpenAI but openai_job.json was never written: find it by its run tag."""
    client = OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0)
    with open(run_dir / "data" / "train.jsonl", "rb") as fh:
        file_id = client.files.create(file=("train.jsonl", fh), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=file_id, metadata={"webtune_run": run_dir.name},
                                         method=supervised(n_epochs=2, learning_rate_multiplier=0.5))
    metrics = openai_ft.train(make_cfg(fake), run_dir, console=console())
    assert fake.job_creations == 1 and metrics["job_id"] == job.id


def supervised(**hyper):
    return {"type": "supervised", "supervised": {"hyperparameters": hyper}}


@pytest.mark.parametrize("model, hyper, data", [
    ("gpt-4.1-mini-2025-04-14", dict(n_epochs=2, learning_rate_multiplier=0.5), None),   # another base model
    (BASE_MODEL, dict(n_epochs=3, learning_rate_multiplier=0.5), None),                    # other epochs
    (BASE_MODEL, dict(n_epochs=2, learning_rate_multiplier=0.5), "0" * 32),                # other data, same size
])
def test_a_job_of_the_run_for_another_model_hyperparameters_or_data_is_not_adopted(fake, run_dir, model, hyper, data):
    client = OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0)
    with open(run_dir / "data" / "train.jsonl", "rb") as fh:
        file_id = client.files.create(file=("train.jsonl", fh), purpose="fine-tune").id
    tags = {"webtune_run": run_dir.name, **({"webtune_data": data} if data else {})}
    old = client.fine_tuning.jobs.create(model=model, training_file=file_id, metadata=tags, method=supervised(**hyper))
    out = console()
    metrics = openai_ft.train(make_cfg(fake), run_dir, console=out)
    assert fake.job_creations == 2 and metrics["job_id"] != old.id
    assert f"job {old.id} of this run is not adopted" in out.file.getvalue()


def test_resume_refuses_when_the_hyperparameters_changed(fake, run_dir):
    fake.hold_running = True
    interrupt_when_running(fake)
    with pytest.raises(WebtuneError):
        openai_ft.train(make_cfg(fake), run_dir, console=console(), ask_cancel=lambda j: False)
    with pytest.raises(WebtuneError, match=r"model.n_epochs is 4 but job ftjob-\d+ was created with 2"):
        openai_ft.train(make_cfg(fake, n_epochs=4), run_dir, console=console())
    assert fake.job_creations == 1


def test_failed_or_other_data_job_of_the_run_is_not_adopted(fake, run_dir):
    client = OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0)
    other = run_dir.parent / "other.jsonl"
    write_jsonl(other, [example(i) for i in range(30)])
    with open(other, "rb") as fh:
        file_id = client.files.create(file=("other.jsonl", fh), purpose="fine-tune").id
    old = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=file_id,
                                         metadata={"webtune_run": run_dir.name})
    metrics = openai_ft.train(make_cfg(fake), run_dir, console=console())
    assert fake.job_creations == 2 and metrics["job_id"] != old.id


def test_resume_refuses_when_the_data_changed(fake, run_dir):
    fake.hold_running = True
    interrupt_when_running(fake)
    with pytest.raises(WebtuneError):
        openai_ft.train(make_cfg(fake), run_dir, console=console(), ask_cancel=lambda j: False)
    write_jsonl(run_dir / "data" / "train.jsonl", [example(i) for i in range(20)])
    with pytest.raises(WebtuneError, match=r"train.jsonl changed since job ftjob-\d+ was created"):
        openai_ft.train(make_cfg(fake), run_dir, console=console())
    assert fake.job_creations == 1


# ---------------------------------------------------------------- talking to the tuned model
def test_chat_and_stream_with_the_tuned_model(fake, run_dir):
    openai_ft.train(make_cfg(fake), run_dir, console=console())
    record = json.loads((run_dir / "model" / "openai_model.json").read_text())
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe the Trail Bottle 3"}]
    reply = openai_ft.chat(run_dir / "model" / "openai_model.json", messages, max_new_tokens=64, temperature=0)
    assert reply == chat_reply(record["fine_tuned_model"], messages)
    assert fake.chat_bodies[-1]["max_tokens"] == 64 and fake.chat_bodies[-1]["model"] == record["fine_tuned_model"]
    pieces = list(openai_ft.chat_stream(run_dir / "model", messages))
    assert len(pieces) > 1 and "".join(pieces) == reply
    assert fake.chat_bodies[-1]["stream"] is True


def test_chat_accepts_a_registry_record(fake, run_dir, tmp_path):
    openai_ft.train(make_cfg(fake), run_dir, console=console())
    tuned = json.loads((run_dir / "model" / "openai_model.json").read_text())["fine_tuned_model"]
    registry_record = tmp_path / "openai_model.json"   # the registry stores {"model": ...}
    registry_record.write_text(json.dumps({"model": tuned, "job": "ftjob-x"}))
    reply = openai_ft.chat(registry_record, [{"role": "user", "content": "hi"}], base_url=fake.base_url, api_key_env=ENV)
    assert reply == chat_reply(tuned, [{"role": "user", "content": "hi"}])


def test_chat_with_unknown_model_is_one_line(fake, run_dir, tmp_path):
    record = tmp_path / "openai_model.json"
    record.write_text(json.dumps({"fine_tuned_model": "ft:nope", "base_url": fake.base_url, "api_key_env": ENV}))
    with pytest.raises(WebtuneError, match=r"404 while chatting with ft:nope: model_not_found"):
        openai_ft.chat(record, [{"role": "user", "content": "hi"}])


# ---------------------------------------------------------------- config and spec
def test_shipped_model_config_validates_against_model_config():
    loaded = OmegaConf.load(SHIPPED / "conf" / "model" / "openai_gpt4o_mini.yaml")
    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), loaded)
    assert model.kind == "openai" and model.name_or_path == BASE_MODEL
    assert model.api_key_env == "OPENAI_API_KEY" and model.n_epochs == "auto"


def test_spec_validation_catches_drift(spec, fake, run_dir):
    if spec is None:
        pytest.skip("OpenAI's openapi.yaml not found (set WEBTUNE_OPENAI_SPEC)")
    openai_ft.train(make_cfg(fake), run_dir, console=console())
    job = next(body for name, body in fake.responses if name == "FineTuningJob")
    assert spec.errors("FineTuningJob", job) == []
    assert spec.errors("FineTuningJob", {k: v for k, v in job.items() if k != "status"})
    assert spec.errors("FineTuningJob", {**job, "status": "done"})
    assert spec.errors("FineTuningJob", {**job, "error": {"code": "x", "message": "y"}})  # param is required
    hyper = {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}
    assert spec.errors("FineTuneSupervisedHyperparameters", hyper) == []
    assert spec.errors("FineTuneSupervisedHyperparameters", {**hyper, "learning_rate_multiplier": 0})


def test_works_inside_the_callers_live_progress(fake, run_dir):
    """The runner may already show a progress bar on the same console."""
    from rich.progress import Progress
    out = console()
    with Progress(console=out) as outer:
        outer.add_task("train", total=1)
        metrics = openai_ft.train(make_cfg(fake), run_dir, console=out)
    assert metrics["fine_tuned_model"] and "Files validated" in out.file.getvalue()


def test_warnings_are_printed_verbatim(fake, run_dir):
    rows = [example(i) for i in range(12)]
    rows[3]["messages"] = rows[3]["messages"][1:]   # no system message: a warning, not an error
    write_jsonl(run_dir / "data" / "train.jsonl", rows)
    out = console()
    openai_ft.train(make_cfg(fake), run_dir, console=out)
    assert "1 of 12 examples have no system message [missing_system_message]" in out.file.getvalue()


# ---------------------------------------------------------------- through the runner, on the default data
def test_default_data_passes_every_check_and_runner_resume_makes_no_second_job(fake, tmp_path, monkeypatch):
    """`webtune run model=openai_gpt4o_mini` on the embedded default: the exported train/val JSONL
    passes every cookbook check, and a run stopped while polling resumes the same job even though
    the runner clears the train stage's outputs before running it again."""
    from webtune.chat.cookbook import check_examples
    from webtune.hydra_setup import compose
    from webtune.runner import Runner
    from webtune.stages import build_stages

    monkeypatch.chdir(REPO)            # the default's paths are relative to the repository
    monkeypatch.setenv(ENV, KEY)
    cfg = compose(["model=openai_gpt4o_mini", f"model.base_url={fake.base_url}", f"model.api_key_env={ENV}",
                   "model.poll_interval=0.01", f"runs_dir={tmp_path / 'runs'}"])
    run_dir = tmp_path / "runs" / "default"
    out = console()
    runner = Runner(cfg, run_dir, build_stages(), out, log=lambda *a: None)
    runner.run(only={"source", "prepare", "mix"})
    for name, minimum in (("train", 10), ("val", 1)):
        report = check_examples(run_dir / "data" / f"{name}.jsonl", min_examples=minimum)
        assert report.ok, report.first_error()
        assert report.n_examples >= minimum and report.n_too_long == 0

    fake.hold_running = True
    interrupt_when_running(fake)
    with pytest.raises(WebtuneError, match="keeps running"):
        openai_ft.train(cfg, run_dir, console=out, ask_cancel=lambda j: False)
    fake.hold_running = False
    Runner(cfg, run_dir, build_stages(), out, log=lambda *a: None).run(only={"train"})
    assert fake.job_creations == 1
    assert json.loads((run_dir / "model" / "openai_model.json").read_text())["job_id"] == next(iter(fake.jobs))
