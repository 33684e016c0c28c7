"""Fine-tune through OpenAI's fine-tuning API (or an OpenAI-compatible provider): validate the
chat files, upload them, create one supervised job, watch it to the end, and record the model.

Money and idempotence shape the order: the data is checked before anything is uploaded; the job
id lands in `model/openai_job.json` before polling starts, so a restarted run resumes watching
that job and never creates a second one. The SDK's own retries handle 429/5xx (no second layer).
The API key is read from the env var named in config and never written anywhere.

OpenAI stops accepting new self-serve fine-tuning jobs on 2027-01-06 (see docs/openai.md).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..console import progress
from ..errors import WebtuneError
from ..fileio import sha256_file, write_json
from ..openai_client import MODEL_FILE, api_error, load_model_record, make_client
from ..redaction import redact
from ..chat import cookbook

JOB_FILE = "openai_job.json"
TERMINAL = ("succeeded", "failed", "cancelled")
DATA_METADATA_KEY = "webtune_data"  # the training file's sha256 (32 hex), so adoption can check the data
RUN_METADATA_KEY = "webtune_run"   # tags the job, so a crash between create and write is recoverable
CLOSURE_NOTE = ("OpenAI stops accepting new self-serve fine-tuning jobs on 2027-01-06 (earlier for some "
                "organizations); use a local model (model=tiny or an hf model) or an OpenAI-compatible "
                "provider via model.base_url")

# USD per 1k training tokens (OpenAI price list, 2025); a model not listed gets no cost figure.
TRAINING_PRICE_PER_1K = {
    "gpt-4o-mini": 0.003,
    "gpt-4o": 0.025,
    "gpt-4.1-nano": 0.0015,
    "gpt-4.1-mini": 0.005,
    "gpt-4.1": 0.025,
    "gpt-3.5-turbo": 0.008,
}
# Tokens per training example (65,536 for the 4o/4.1 families per Azure's model table; cookbook 16,385).
MAX_TOKENS_PER_EXAMPLE = {"gpt-4o": 65536, "gpt-4.1": 65536, "gpt-3.5-turbo": 16385}


def _by_prefix(table: dict, model: str, default=None):
    """Longest table key that `model` starts with (gpt-4o-mini-2024-07-18 -> gpt-4o-mini)."""
    keys = sorted((k for k in table if model.startswith(k)), key=len, reverse=True)
    return table[keys[0]] if keys else default


def _option(section, key: str, default):
    """Optional config keys that ModelConfig may not carry yet."""
    try:
        value = section.get(key, default)
    except Exception:
        value = default
    return default if value is None else value


# ---------------------------------------------------------------- client
def _client_for(model_cfg):
    return make_client(model_cfg.api_key_env, model_cfg.base_url,
                       max_retries=int(_option(model_cfg, "max_retries", 2)),
                       timeout=float(_option(model_cfg, "timeout", 120.0)))


# ---------------------------------------------------------------- small helpers
def _has_examples(path: Path) -> bool:
    return path.is_file() and any(line.strip() for line in open(path, encoding="utf-8"))


def _as_dict(value) -> dict:
    if value is None:
        return {}
    try:
        from omegaconf import OmegaConf
        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:
        pass
    return dict(value)


# ---------------------------------------------------------------- validate
def validate_files(train_path: Path, val_path: Optional[Path], base_model: str,
                   max_tokens_per_example: Optional[int] = None) -> list[cookbook.Report]:
    """Run the cookbook checks; raise one line naming the file, line and field on any error."""
    limit = max_tokens_per_example or _by_prefix(MAX_TOKENS_PER_EXAMPLE, base_model,
                                                 cookbook.DEFAULT_MAX_TOKENS_PER_EXAMPLE)
    reports = [cookbook.check_examples(train_path, max_tokens_per_example=limit)]
    if val_path is not None:
        reports.append(cookbook.check_examples(val_path, max_tokens_per_example=limit, min_examples=1))
    for report in reports:
        if not report.ok:
            raise WebtuneError(f"{report.first_error()}; nothing was uploaded, fix the data and rerun")
    return reports


# ---------------------------------------------------------------- train
def train(cfg, run_dir: Path, console: Optional[Console] = None,
          ask_cancel: Optional[Callable[[str], bool]] = None) -> dict:
    """Fine-tune `cfg.model.name_or_path` on RUN/data/train.jsonl (+ val.jsonl); returns metrics.

    Writes RUN/model/openai_job.json before polling and RUN/model/openai_model.json on success.
    `ask_cancel(job_id)` decides on Ctrl-C whether to cancel the job (default: ask on the console).
    """
    console = console or Console(stderr=True)
    m, run_dir = cfg.model, Path(run_dir)
    train_path, val_path = run_dir / "data" / "train.jsonl", run_dir / "data" / "val.jsonl"
    job_path = run_dir / "model" / JOB_FILE
    if job_path.exists():
        record, estimate, client = _resumed_job(job_path, train_path, val_path, m, console), None, _client_for(m)
    else:
        client, record, estimate = _new_job(cfg, run_dir, train_path, val_path, console)
    job_id = record["job_id"]
    job, curve = _watch(client, job_id, float(m.poll_interval), console, ask_cancel, run_dir, m.api_key_env)
    _refuse_unfinished(job, job_id, job_path)
    checkpoints = _checkpoints(client, job_id, m.api_key_env)
    write_json(run_dir / "model" / MODEL_FILE, {
        "fine_tuned_model": job.fine_tuned_model, "job_id": job_id, "base_model": job.model,
        "checkpoints": checkpoints, "trained_tokens": job.trained_tokens,
        "result_files": list(job.result_files or []),
        "base_url": m.base_url, "api_key_env": m.api_key_env,   # the env var's name, never its value
    })
    console.print(f"[bold green]openai[/]: job {job_id} succeeded: {job.fine_tuned_model}")
    train_points = [p for p in curve if "loss" in p]
    metrics = {
        "backend": "openai", "job_id": job_id, "fine_tuned_model": job.fine_tuned_model,
        "base_model": job.model, "steps": max((p["step"] for p in curve), default=0),
        "train_loss": train_points[-1]["loss"] if train_points else None,
        "tokens": job.trained_tokens, "loss_curve": curve, "checkpoints": len(checkpoints),
    }
    if estimate is not None:
        metrics["estimated_billed_tokens"] = estimate.billed_tokens
        metrics["estimated_cost_usd"] = estimate.cost_usd
    return metrics


def _resumed_job(job_path: Path, train_path: Path, val_path: Path, m, console: Console) -> dict:
    """The job a killed run started (RUN/model/openai_job.json), checked against today's data and config."""
    try:
        record = json.loads(job_path.read_text(encoding="utf-8"))
        record["job_id"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise WebtuneError(f"{job_path}: not a job record (no job_id); restore it, or remove it to "
                           f"start a new job") from None
    _check_same_data(record, job_path, train_path, val_path)
    _check_same_job_config(record, job_path, m)
    console.print(f"[bold]openai[/]: resuming job {record['job_id']} from {escape(str(job_path))} (no new job is created)")
    return record


def _new_job(cfg, run_dir: Path, train_path: Path, val_path: Path, console: Console):
    """Check the files and show the cost estimate (before any client exists), then upload and create the
    job; its record is saved before polling. Returns (client, job record, estimate)."""
    m = cfg.model
    val = val_path if _has_examples(val_path) else None
    reports = validate_files(train_path, val, m.name_or_path, _option(m, "max_tokens_per_example", None))
    estimate = _show_estimate(console, reports, m)
    client = _client_for(m)
    record = _start_job(client, cfg, run_dir, train_path, val, console)
    write_json(run_dir / "model" / JOB_FILE, record)
    return client, record, estimate


def _refuse_unfinished(job, job_id: str, job_path: Path) -> None:
    if job.status == "failed":
        err = job.error
        detail = f"{err.code}: {err.message} (param: {err.param})" if err else "no error detail given"
        raise WebtuneError(f"OpenAI fine-tuning job {job_id} failed: {detail}; fix it and remove "
                           f"{job_path} to start a new job")
    if job.status == "cancelled":
        raise WebtuneError(f"OpenAI fine-tuning job {job_id} was cancelled; remove {job_path} to start a new job")


def _check_same_data(record: dict, job_path: Path, train_path: Path, val_path: Path) -> None:
    """Resuming a job made from other data would record the wrong model for this run."""
    for key, path in (("training_sha256", train_path), ("validation_sha256", val_path)):
        want = record.get(key)
        if want and (not path.exists() or sha256_file(path) != want):
            raise WebtuneError(f"{path} changed since job {record['job_id']} was created from it; restore it, "
                               f"or remove {job_path} to start a new job")


def _check_same_job_config(record: dict, job_path: Path, m) -> None:
    """Resuming a job made for another base model or other hyperparameters would record a model
    this run's config did not ask for."""
    wanted = {"model.name_or_path": (record.get("base_model"), m.name_or_path),
              **{f"model.{k}": (record.get("hyperparameters", {}).get(k, v), v)
                 for k, v in _hyperparameters(m).items()}}
    for key, (was, now) in wanted.items():
        if str(was) != str(now):
            raise WebtuneError(f"{key} is {now!r} but job {record['job_id']} was created with {was!r}; set it "
                               f"back, or remove {job_path} to start a new job (it bills again)")


def _matches(job, m, train_sha: str) -> str | None:
    """Why `job` is not one this run's config and data would create (None: it is)."""
    if job.model != m.name_or_path:
        return f"base model {job.model}"
    hyper = getattr(getattr(getattr(job, "method", None), "supervised", None), "hyperparameters", None) \
        or getattr(job, "hyperparameters", None)
    for k, want in _hyperparameters(m).items():
        got = getattr(hyper, k, None) if hyper is not None else None
        if str(want) != "auto" and (got is None or str(got) != str(want)):
            try:
                if float(got) == float(want):
                    continue
            except (TypeError, ValueError):
                pass
            return f"{k}={got!r}, not {want!r}"
    data = (job.metadata or {}).get(DATA_METADATA_KEY)
    if data is not None and data != train_sha[:32]:
        return "other training data"
    return None


def _show_estimate(console: Console, reports: list, m) -> cookbook.CostEstimate:
    train_report = reports[0]
    for report in reports:
        for warning in report.warnings[:5]:
            console.print(f"[yellow]warning[/] {escape(f'{report.path}: {warning}')}", highlight=False)
        if len(report.warnings) > 5:
            console.print(f"[yellow]warning[/] {escape(str(report.path))}: {len(report.warnings) - 5} more warnings")
    price = _option(m, "price_per_1k_tokens", None) or _by_prefix(TRAINING_PRICE_PER_1K, m.name_or_path)
    estimate = cookbook.estimate_cost(train_report, m.n_epochs, price)
    console.print(f"[bold]openai[/]: {train_report.n_examples} training examples, {escape(str(estimate))}")
    return estimate


def _hyperparameters(m) -> dict:
    return {"n_epochs": m.n_epochs, "batch_size": m.batch_size,
            "learning_rate_multiplier": m.learning_rate_multiplier}


def _start_job(client, cfg, run_dir: Path, train_path: Path, val_path: Optional[Path], console: Console) -> dict:
    """Adopt this run's live job if a crash hid it, else upload both files and create one job."""
    import openai
    m = cfg.model
    metadata = {str(k): str(v) for k, v in _as_dict(m.metadata).items()}
    if len(metadata) < 16:
        metadata.setdefault(RUN_METADATA_KEY, run_dir.resolve().name)
    if len(metadata) < 16:
        metadata.setdefault(DATA_METADATA_KEY, sha256_file(train_path)[:32])
    job = _find_live_job(client, metadata.get(RUN_METADATA_KEY), m, train_path, console)
    if job is not None:
        console.print(f"[bold]openai[/]: found job {job.id} already created for this run; watching it")
    else:
        training_file = _upload(client, train_path, console, m.api_key_env)
        validation_file = _upload(client, val_path, console, m.api_key_env) if val_path else None
        kwargs = dict(model=m.name_or_path, training_file=training_file, validation_file=validation_file,
                      method={"type": "supervised", "supervised": {"hyperparameters": _hyperparameters(m)}},
                      seed=int(m.train.seed), metadata=metadata or None)
        if m.suffix:
            kwargs["suffix"] = m.suffix
        try:
            job = client.fine_tuning.jobs.create(**kwargs)
        except openai.APIStatusError as exc:
            if 400 <= exc.status_code < 500 and exc.status_code not in (401, 429):
                body = exc.body if isinstance(exc.body, dict) else {}
                raise WebtuneError(redact(
                    f"OpenAI refused to create the fine-tuning job for {m.name_or_path} ({exc.status_code} "
                    f"{body.get('code') or exc.__class__.__name__}: {body.get('message') or exc}); "
                    f"{CLOSURE_NOTE}")) from None
            raise api_error(exc, "creating the fine-tuning job", m.api_key_env) from None
        except openai.OpenAIError as exc:
            raise api_error(exc, "creating the fine-tuning job", m.api_key_env) from None
        console.print(f"[bold]openai[/]: created job {job.id} ({m.name_or_path})")
    return {
        "job_id": job.id, "base_model": m.name_or_path, "training_file": job.training_file,
        "validation_file": job.validation_file, "created_at": job.created_at,
        "training_sha256": sha256_file(train_path), "validation_sha256": sha256_file(val_path) if val_path else None,
        "base_url": m.base_url, "hyperparameters": _hyperparameters(m),
    }


def _find_live_job(client, run_tag: Optional[str], m, train_path: Path, console: Console):
    """This run's newest job, if it has not failed and was made for the same base model,
    hyperparameters and training data (its data tag, else its training file's size)."""
    if not run_tag:
        return None
    import openai
    try:
        for job in client.fine_tuning.jobs.list(metadata={RUN_METADATA_KEY: run_tag}, limit=10):
            if (job.metadata or {}).get(RUN_METADATA_KEY) != run_tag or job.status in ("failed", "cancelled"):
                return None
            why = _matches(job, m, sha256_file(train_path))
            if why is None and client.files.retrieve(job.training_file).bytes != train_path.stat().st_size:
                why = "a training file of another size"
            if why is not None:
                console.print(f"[bold]openai[/]: job {job.id} of this run is not adopted ({why}); creating a new one")
                return None
            return job
    except openai.NotFoundError:
        return None  # providers without the list endpoint
    except openai.OpenAIError as exc:
        raise api_error(exc, "looking for this run's job", m.api_key_env) from None
    return None


def _upload(client, path: Path, console: Console, api_key_env: str) -> str:
    import openai
    try:
        with open(path, "rb") as fh:
            uploaded = client.files.create(file=(path.name, fh), purpose="fine-tune")
    except openai.OpenAIError as exc:
        raise api_error(exc, f"uploading {path}", api_key_env) from None
    console.print(f"[bold]openai[/]: uploaded {path.name} as {uploaded.id} ({uploaded.bytes:,} bytes)")
    return uploaded.id


# ---------------------------------------------------------------- watch
def _watch(client, job_id: str, poll_interval: float, console: Console,
           ask_cancel: Optional[Callable[[str], bool]], run_dir: Path, api_key_env: str):
    """Poll status and events until the job ends; returns (job, loss curve)."""
    import openai
    seen: set[str] = set()
    curve: dict[int, dict] = {}
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn())
    try:
        with progress(*columns, console=console) as bar:
            task = bar.add_task(f"{job_id} starting", total=None, loss="")
            while True:
                try:
                    job = client.fine_tuning.jobs.retrieve(job_id)
                    events = _new_events(client, job_id, seen)
                except openai.OpenAIError as exc:
                    raise api_error(exc, f"watching job {job_id}", api_key_env) from None
                total = None
                for event in events:
                    data = event.data if isinstance(event.data, dict) else {}
                    if event.type == "metrics" and "step" in data:
                        point = curve.setdefault(int(data["step"]), {"step": int(data["step"])})
                        if "train_loss" in data:
                            point["loss"] = data["train_loss"]
                        if data.get("valid_loss") is not None:
                            point["eval_loss"] = data["valid_loss"]
                        total = data.get("total_steps") or total
                    else:
                        style = {"warn": "yellow", "error": "red"}.get(event.level, "dim")
                        bar.console.print(f"[{style}]{job_id}[/] {escape(event.message)}", highlight=False)
                last = curve[max(curve)] if curve else None
                bar.update(task, description=f"{job_id} {job.status}",
                                completed=last["step"] if last else 0,
                                total=total or bar.tasks[0].total,
                                loss=f"loss {last['loss']:.4f}" if last and "loss" in last else "")
                if job.status in TERMINAL:
                    return job, [curve[k] for k in sorted(curve)]
                time.sleep(poll_interval)
    except KeyboardInterrupt:
        _on_interrupt(client, job_id, console, ask_cancel, run_dir, api_key_env)
        raise  # not reached: _on_interrupt always raises


def _new_events(client, job_id: str, seen: set[str]) -> list:
    """Events not shown yet, oldest first (the API lists newest first)."""
    fresh = []
    for event in client.fine_tuning.jobs.list_events(job_id, limit=50):
        if event.id in seen:
            break
        fresh.append(event)
    seen.update(e.id for e in fresh)
    return list(reversed(fresh))


def _on_interrupt(client, job_id: str, console: Console, ask_cancel, run_dir: Path, api_key_env: str):
    import openai
    if ask_cancel is None:
        def ask_cancel(job: str) -> bool:
            from rich.prompt import Confirm
            try:
                return Confirm.ask(f"Cancel OpenAI job {job}? (no: leave it running)", console=console, default=False)
            except EOFError:
                return False
    if ask_cancel(job_id):
        try:
            client.fine_tuning.jobs.cancel(job_id)
        except openai.OpenAIError as exc:
            raise api_error(exc, f"cancelling job {job_id}", api_key_env) from None
        raise WebtuneError(f"cancelled OpenAI fine-tuning job {job_id} at your request")
    raise WebtuneError(f"stopped watching OpenAI job {job_id}; it keeps running on OpenAI's side. "
                       f"`webtune resume {run_dir}` watches it again")


def _checkpoints(client, job_id: str, api_key_env: str) -> list[dict]:
    import openai
    try:
        page = client.fine_tuning.jobs.checkpoints.list(job_id)
        items = list(page)
    except openai.NotFoundError:
        return []   # OpenAI-compatible providers may not have checkpoints
    except openai.OpenAIError as exc:
        raise api_error(exc, f"listing checkpoints of {job_id}", api_key_env) from None
    return [{"id": c.id, "step_number": c.step_number, "model": c.fine_tuned_model_checkpoint,
             "metrics": c.metrics.model_dump(exclude_none=True) if c.metrics else {}}
            for c in sorted(items, key=lambda c: c.step_number)]


# ---------------------------------------------------------------- chat with the tuned model
def _chat_request(model_json: Path, messages: list[dict], gen: dict, client=None):
    record = load_model_record(model_json)
    api_key_env = gen.pop("api_key_env", None) or record.get("api_key_env") or "OPENAI_API_KEY"
    base_url = gen.pop("base_url", None) or record.get("base_url")
    max_retries = int(gen.pop("max_retries", 2))
    client = client or make_client(api_key_env, base_url, max_retries=max_retries)
    if "max_new_tokens" in gen:   # the local backends' name for it
        gen["max_tokens"] = gen.pop("max_new_tokens")
    if "do_sample" in gen and not gen.pop("do_sample"):
        gen["temperature"] = 0
    return client, dict(model=record["fine_tuned_model"], messages=list(messages), **gen)


def chat(model_json: Path, messages: list[dict], *, client=None, **gen) -> str:
    """One reply from the tuned model. gen: max_new_tokens|max_tokens, temperature, top_p, seed, stop,
    and base_url / api_key_env to override the record's."""
    import openai
    client, request = _chat_request(model_json, messages, dict(gen), client)
    try:
        response = client.chat.completions.create(**request)
    except openai.OpenAIError as exc:
        raise api_error(exc, f"chatting with {request['model']}") from None
    return response.choices[0].message.content or ""


def chat_stream(model_json: Path, messages: list[dict], *, client=None, **gen) -> Iterator[str]:
    """The reply as text pieces while the model writes them."""
    import openai
    client, request = _chat_request(model_json, messages, dict(gen), client)
    try:
        for chunk in client.chat.completions.create(stream=True, **request):
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    yield choice.delta.content
    except openai.OpenAIError as exc:
        raise api_error(exc, f"chatting with {request['model']}") from None
