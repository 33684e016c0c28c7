"""A stateful fake of OpenAI's files, fine-tuning and chat endpoints, on 127.0.0.1 over real HTTP.

It follows the wire contract in `contracts/openai.md` and the official OpenAPI spec, so the real
`openai` SDK talks to it unchanged (`base_url=fake.base_url`). A job walks
validating_files -> queued -> running -> succeeded, one step per `retrieve`, and writes metrics
events while running. Tests can make the next jobs fail, refuse job creation, hold a job in
`running`, or answer 429/500 a number of times. Every JSON body it sends is kept in `responses`
with the spec schema it must match, so a test can validate them and the fake cannot drift.
"""
from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from tests.fakes.base import LocalServer, send_json


@dataclass
class InjectedError:
    method: str
    path: re.Pattern
    status: int
    times: int
    retry_after_ms: Optional[int] = 20   # small, so the SDK's own retry waits briefly


ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
               404: "invalid_request_error", 429: "requests", 500: "server_error", 503: "server_error"}


class FakeOpenAI(LocalServer):
    def __init__(self, api_key: str = "sk-fake-test-key", steps_per_phase: int = 1, train_steps: int = 4):
        self.api_key = api_key
        self.steps_per_phase = steps_per_phase   # retrieves spent in validating_files and in queued
        self.train_steps = train_steps           # retrieves spent running (one metrics event each)
        self.fail_jobs: Optional[dict] = None    # {"code", "message", "param"}: jobs fail after validation
        self.refuse_create: Optional[tuple[int, str, str]] = None  # (status, code, message) on POST jobs
        self.hold_running = False                # jobs stay in `running` (for Ctrl-C tests)
        self.echo_key = False                    # a 401 quotes the key it refused, as some compatible servers do
        self.files: dict[str, dict] = {}
        self.file_contents: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}
        self.create_bodies: list[dict] = []      # every accepted POST /fine_tuning/jobs body
        self.chat_bodies: list[dict] = []        # every POST /chat/completions body
        self.job_creations = 0
        self.requests: list[tuple[str, str, int]] = []     # (method, path, status)
        self.responses: list[tuple[str, Any]] = []         # (spec schema name, JSON body)
        self._injected: list[InjectedError] = []
        self._events: dict[str, list[dict]] = {}
        self._checkpoints: dict[str, list[dict]] = {}
        self._phase: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # ------------------------------------------------------------ lifecycle
    def handler(self) -> type:
        return type("Handler", (_Handler,), {"server_fake": self})

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    # ------------------------------------------------------------ test knobs
    def inject(self, method: str, path_regex: str, status: int, times: int = 1,
               retry_after_ms: Optional[int] = 20) -> None:
        """Answer the next `times` matching requests with `status` and an OpenAI error body."""
        with self._lock:
            self._injected.append(InjectedError(method.upper(), re.compile(path_regex), status, times, retry_after_ms))

    def count(self, method: str, path_regex: str, status: Optional[int] = None) -> int:
        pattern = re.compile(path_regex)
        return sum(1 for m, p, s in self.requests
                   if m == method.upper() and pattern.search(p) and (status is None or s == status))

    def _take_injected(self, method: str, path: str) -> Optional[InjectedError]:
        with self._lock:
            for inj in self._injected:
                if inj.method == method and inj.path.search(path) and inj.times > 0:
                    inj.times -= 1
                    return inj
        return None

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    # ------------------------------------------------------------ files
    def create_file(self, filename: str, content: bytes, purpose: str) -> dict:
        file_id = self._new_id("file-")
        obj = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed"}
        with self._lock:
            self.files[file_id] = obj
            self.file_contents[file_id] = content
        return obj

    # ------------------------------------------------------------ jobs
    def create_job(self, body: dict) -> dict:
        job_id = self._new_id("ftjob-")
        hyper = (body.get("method") or {}).get("supervised", {}).get("hyperparameters") \
            or body.get("hyperparameters") or {}
        hyperparameters = {k: hyper.get(k, "auto") for k in ("batch_size", "learning_rate_multiplier", "n_epochs")}
        job = {
            "object": "fine_tuning.job", "id": job_id, "model": body["model"], "created_at": int(time.time()),
            "finished_at": None, "fine_tuned_model": None, "organization_id": "org-fake",
            "result_files": [], "status": "validating_files", "training_file": body["training_file"],
            "validation_file": body.get("validation_file"), "trained_tokens": None,
            "hyperparameters": hyperparameters, "seed": body.get("seed") if body.get("seed") is not None else 42,
            "estimated_finish": None, "integrations": None,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            "metadata": body.get("metadata") or None, "error": None,
            "suffix": body.get("suffix"),
        }
        with self._lock:
            self.jobs[job_id] = job
            self._events[job_id] = []
            self._checkpoints[job_id] = []
            self._phase[job_id] = 0
            self.job_creations += 1
            self.create_bodies.append(body)
        self._event(job_id, f"Created fine-tuning job: {job_id}")
        self._event(job_id, f"Validating training file: {body['training_file']}")
        return self._public_job(job)

    def _public_job(self, job: dict) -> dict:
        return {k: v for k, v in job.items() if k != "suffix"}

    def _event(self, job_id: str, message: str, level: str = "info", type_: str = "message",
               data: Optional[dict] = None) -> None:
        self._events[job_id].append({"object": "fine_tuning.job.event", "id": self._new_id("ftevent-"),
                                     "created_at": int(time.time()), "level": level, "message": message,
                                     "type": type_, "data": data or {}})

    def _file_problem(self, file_id: Optional[str], param: str) -> Optional[dict]:
        """What OpenAI's own validation would say about an uploaded file (a small subset)."""
        if file_id is None:
            return None
        content = self.file_contents.get(file_id, b"")
        lines = [line for line in content.decode("utf-8", "replace").splitlines() if line.strip()]
        for number, line in enumerate(lines, start=1):
            try:
                ok = isinstance(json.loads(line).get("messages"), list)
            except (ValueError, AttributeError):
                ok = False
            if not ok:
                return {"code": "invalid_file_format", "param": param,
                        "message": f"Invalid file format. Line {number}, key \"messages\": missing or not a list."}
        if param == "training_file" and len(lines) < 10:
            return {"code": "invalid_n_examples", "param": param,
                    "message": f"Training file has {len(lines)} example(s), but must have at least 10 examples"}
        return None

    def advance(self, job_id: str) -> dict:
        """One retrieve = one step of the job's life."""
        with self._lock:
            job = self.jobs[job_id]
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return self._public_job(job)
            self._phase[job_id] += 1
            step = self._phase[job_id]
            k = self.steps_per_phase
            if step < k:
                pass  # still validating
            elif step == k:
                problem = self._file_problem(job["training_file"], "training_file") \
                    or self._file_problem(job["validation_file"], "validation_file") or self.fail_jobs
                if problem:
                    self._finish(job, "failed", error=dict(problem))
                    self._event(job_id, f"Fine-tuning job failed: {problem['message']}", level="error")
                else:
                    job["status"] = "queued"
                    self._event(job_id, "Files validated, moving job to queued state")
            elif step < 2 * k:
                pass  # still queued
            else:
                self._run_step(job, step - 2 * k + 1)
            return self._public_job(job)

    def _run_step(self, job: dict, train_step: int) -> None:
        job_id = job["id"]
        if job["status"] == "queued":
            job["status"] = "running"
            self._event(job_id, "Fine-tuning job started")
        if self.hold_running:
            self._phase[job_id] -= 1     # stay here
            return
        total = self.train_steps
        if train_step <= total:
            loss = round(2.0 / (1 + train_step), 4)
            data = {"step": train_step, "train_loss": loss, "total_steps": total,
                    "train_mean_token_accuracy": round(0.5 + 0.1 * train_step / total, 4)}
            if job["validation_file"]:
                data["valid_loss"] = round(loss * 1.1, 4)
            self._event(job_id, f"Step {train_step}/{total}: training loss={loss}", type_="metrics", data=data)
            return
        model = f"ft:{job['model']}:webtune-fake:{job['suffix'] or 'model'}:{job_id[-6:]}"
        epochs = job["hyperparameters"]["n_epochs"]
        epochs = 3 if epochs == "auto" else int(epochs)
        content = self.file_contents.get(job["training_file"], b"")
        for e in range(1, min(epochs, 3) + 1):
            step = max(1, total * e // min(epochs, 3))
            self._checkpoints[job_id].append({
                "object": "fine_tuning.job.checkpoint", "id": self._new_id("ftckpt_"),
                "created_at": int(time.time()), "fine_tuning_job_id": job_id, "step_number": step,
                "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{step}",
                "metrics": {"step": float(step), "train_loss": round(2.0 / (1 + step), 4),
                            "train_mean_token_accuracy": 0.6}})
        result = self.create_file("step_metrics.csv", b"step,train_loss\n", "fine-tune-results")
        job["result_files"] = [result["id"]]
        job["trained_tokens"] = len(content) // 4 * epochs
        self._finish(job, "succeeded", fine_tuned_model=model)
        self._event(job_id, f"New fine-tuned model created: {model}")
        self._event(job_id, "The job has successfully completed")

    def _finish(self, job: dict, status: str, **fields) -> None:
        job.update(status=status, finished_at=int(time.time()), **fields)

    def cancel(self, job_id: str) -> dict:
        with self._lock:
            job = self.jobs[job_id]
            if job["status"] not in ("succeeded", "failed", "cancelled"):
                self._finish(job, "cancelled")
                self._event(job_id, "Fine-tuning job cancelled")
            return self._public_job(job)

    def events_page(self, job_id: str, after: Optional[str], limit: int) -> dict:
        """Newest first; `after` pages towards older events, as OpenAI does."""
        with self._lock:
            newest_first = list(reversed(self._events[job_id]))
        if after is not None:
            ids = [e["id"] for e in newest_first]
            newest_first = newest_first[ids.index(after) + 1:] if after in ids else []
        page = newest_first[:limit]
        return {"object": "list", "data": page, "has_more": len(newest_first) > limit}

    def checkpoints_page(self, job_id: str) -> dict:
        with self._lock:
            data = list(reversed(self._checkpoints[job_id]))
        return {"object": "list", "data": data, "has_more": False,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    def tuned_models(self) -> set[str]:
        with self._lock:
            return {j["fine_tuned_model"] for j in self.jobs.values() if j["fine_tuned_model"]}


def error_body(message: str, type_: str, code: Optional[str] = None, param: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def chat_reply(model: str, messages: list[dict]) -> str:
    """Deterministic, so tests can check what reached the model."""
    last_user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    return f"{model} answers: {last_user}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go out in two writes: avoid the 40 ms delayed-ACK stall
    server_fake: FakeOpenAI

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    # ------------------------------------------------------------ plumbing
    def _send_json(self, status: int, body: Any, schema: str, headers: Optional[dict] = None) -> None:
        fake = self.server_fake
        with fake._lock:
            fake.responses.append((schema, body))
            fake.requests.append((self.command, urlsplit(self.path).path, status))
        send_json(self, status, body, headers)

    def _error(self, status: int, message: str, code: Optional[str] = None, param: Optional[str] = None,
               headers: Optional[dict] = None) -> None:
        self._send_json(status, error_body(message, ERROR_TYPES.get(status, "invalid_request_error"), code, param),
                        "ErrorResponse", headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> Optional[dict]:
        try:
            body = json.loads(self._body() or b"{}")
        except ValueError:
            self._error(400, "We could not parse the JSON body of your request.")
            return None
        return body

    def _preflight(self) -> bool:
        """Auth and injected errors; False when a response was already sent."""
        fake = self.server_fake
        if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            self._error(401, f"Incorrect API key provided: {given}." if fake.echo_key else "Incorrect API key provided.",
                        code="invalid_api_key")
            return False
        inj = fake._take_injected(self.command, urlsplit(self.path).path)
        if inj is not None:
            self._body()  # drain, so the connection stays usable
            headers = {"retry-after-ms": str(inj.retry_after_ms)} if inj.retry_after_ms is not None else {}
            code = "rate_limit_exceeded" if inj.status == 429 else None
            self._error(inj.status, f"Injected {inj.status} from the fake server.", code=code, headers=headers)
            return False
        return True

    # ------------------------------------------------------------ routes
    def do_GET(self) -> None:
        if not self._preflight():
            return
        fake = self.server_fake
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        if m := re.fullmatch(r"/v1/files/([\w-]+)", path):
            if m[1] not in fake.files:
                return self._error(404, f"No such File object: {m[1]}", param="id")
            return self._send_json(200, fake.files[m[1]], "OpenAIFile")
        if path == "/v1/fine_tuning/jobs":
            wanted = {k[len("metadata["):-1]: v for k, v in query.items() if k.startswith("metadata[")}
            with fake._lock:
                jobs = [fake._public_job(j) for j in reversed(list(fake.jobs.values()))
                        if all((j["metadata"] or {}).get(k) == v for k, v in wanted.items())]
            return self._send_json(200, {"object": "list", "data": jobs, "has_more": False},
                                   "ListPaginatedFineTuningJobsResponse")
        m = re.fullmatch(r"/v1/fine_tuning/jobs/([\w-]+)(/events|/checkpoints)?", path)
        if m is None:
            return self._error(404, f"Unknown path {path}")
        job_id, sub = m[1], m[2]
        if job_id not in fake.jobs:
            return self._error(404, f"Could not find fine-tune: {job_id}", code="fine_tune_not_found")
        if sub is None:
            return self._send_json(200, fake.advance(job_id), "FineTuningJob")
        if sub == "/events":
            page = fake.events_page(job_id, query.get("after"), int(query.get("limit", 20)))
            return self._send_json(200, page, "ListFineTuningJobEventsResponse")
        return self._send_json(200, fake.checkpoints_page(job_id), "ListFineTuningJobCheckpointsResponse")

    def do_POST(self) -> None:
        if not self._preflight():
            return
        fake = self.server_fake
        path = urlsplit(self.path).path
        if path == "/v1/files":
            return self._upload()
        if path == "/v1/fine_tuning/jobs":
            body = self._json_body()
            if body is None:
                return
            if fake.refuse_create is not None:
                status, code, message = fake.refuse_create
                return self._error(status, message, code=code)
            for key in ("model", "training_file"):
                if not body.get(key):
                    return self._error(400, f"Missing required parameter: '{key}'.", param=key)
            for key in ("training_file", "validation_file"):
                if body.get(key) and body[key] not in fake.files:
                    return self._error(400, f"invalid {key}: {body[key]}", code="invalid_request_error", param=key)
            return self._send_json(200, fake.create_job(body), "FineTuningJob")
        if m := re.fullmatch(r"/v1/fine_tuning/jobs/([\w-]+)/cancel", path):
            self._body()
            if m[1] not in fake.jobs:
                return self._error(404, f"Could not find fine-tune: {m[1]}", code="fine_tune_not_found")
            return self._send_json(200, fake.cancel(m[1]), "FineTuningJob")
        if path == "/v1/chat/completions":
            return self._chat()
        self._body()
        self._error(404, f"Unknown path {path}")

    def _upload(self) -> None:
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            self._body()
            return self._error(400, "Expected multipart/form-data")
        raw = f"Content-Type: {ctype}\r\n\r\n".encode() + self._body()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        fields, filename, content = {}, None, None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                filename = part.get_filename()
                content = part.get_payload(decode=True)
            else:
                fields[name] = part.get_content().strip()
        if content is None:
            return self._error(400, "Missing required parameter: 'file'.", param="file")
        purpose = fields.get("purpose")
        if purpose not in ("assistants", "batch", "fine-tune", "vision", "user_data", "evals"):
            return self._error(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose")
        if purpose == "fine-tune" and not (filename or "").endswith(".jsonl"):
            return self._error(400, "Invalid file format for Fine-Tuning API. Must be .jsonl", param="file")
        self._send_json(200, self.server_fake.create_file(filename, content, purpose), "OpenAIFile")

    def _chat(self) -> None:
        fake = self.server_fake
        body = self._json_body()
        if body is None:
            return
        with fake._lock:
            fake.chat_bodies.append(body)
        model = body.get("model")
        if model not in fake.tuned_models():
            return self._error(404, f"The model `{model}` does not exist or you do not have access to it.",
                               code="model_not_found")
        text = chat_reply(model, body.get("messages") or [])
        created, completion_id = int(time.time()), fake._new_id("chatcmpl-")
        usage = {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 10 + len(text.split())}
        if not body.get("stream"):
            response = {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
                        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                     "message": {"role": "assistant", "content": text, "refusal": None}}],
                        "usage": usage}
            return self._send_json(200, response, "CreateChatCompletionResponse")
        self._stream(completion_id, created, model, text,
                     usage if (body.get("stream_options") or {}).get("include_usage") else None)

    def _stream(self, completion_id: str, created: int, model: str, text: str, usage: Optional[dict]) -> None:
        fake = self.server_fake
        words = text.split(" ")
        deltas = [{"role": "assistant", "content": ""}] + [{"content": (" " if i else "") + w} for i, w in enumerate(words)]
        chunks = []
        for i, delta in enumerate(deltas):
            last = i == len(deltas) - 1
            chunks.append({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None,
                                        "logprobs": None}]})
        if usage is not None:
            chunks.append({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                           "model": model, "choices": [], "usage": usage})
        with fake._lock:
            fake.requests.append(("POST", "/v1/chat/completions", 200))
            fake.responses.extend(("CreateChatCompletionStreamResponse", c) for c in chunks)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


# ---------------------------------------------------------------- the official spec, for validation
SPEC_CANDIDATES = (
    "docs/contracts/openai-openapi.yaml",
)


def find_spec() -> Optional[str]:
    """OpenAI's OpenAPI spec: $WEBTUNE_OPENAI_SPEC, or a known place relative to the repo root."""
    import os
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    env = os.environ.get("WEBTUNE_OPENAI_SPEC")
    for candidate in ([env] if env else []) + [str(root / c) for c in SPEC_CANDIDATES]:
        if Path(candidate).is_file():
            return candidate
    return None


def _fix_openapi_quirks(node: Any) -> Any:
    """OpenAPI 3.0 leftovers in the 3.1 spec that JSON Schema 2020-12 reads differently:
    boolean exclusiveMinimum/Maximum (3.0) and `nullable: true`."""
    if isinstance(node, list):
        return [_fix_openapi_quirks(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _fix_openapi_quirks(v) for k, v in node.items()}
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), bool):
            if node.pop(bound) and plain in node:
                node[bound] = node.pop(plain)
    if node.pop("nullable", False):
        node = {"anyOf": [node, {"type": "null"}]}
    return node


class SpecValidator:
    """Validates JSON bodies against components/schemas/<name> of the official spec."""

    URI = "urn:openai-openapi"

    def __init__(self, spec_path: str):
        import yaml
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(spec_path, encoding="utf-8") as fh:
            spec = _fix_openapi_quirks(yaml.load(fh, Loader=loader))
        self.schemas = spec["components"]["schemas"]
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(self.URI, resource)
        self._validators: dict[str, Any] = {}

    def errors(self, schema_name: str, body: Any) -> list[str]:
        from jsonschema import Draft202012Validator
        if schema_name not in self.schemas:
            return [f"schema {schema_name} is not in the spec"]
        validator = self._validators.get(schema_name)
        if validator is None:
            validator = Draft202012Validator({"$ref": f"{self.URI}#/components/schemas/{schema_name}"},
                                             registry=self.registry)
            self._validators[schema_name] = validator
        return [f"{schema_name} at /{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(body)]
