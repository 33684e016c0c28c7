"""OpenAI chat fine-tuning data checks, token counts and a cost estimate.

The checks are the OpenAI cookbook's (`examples/Chat_finetuning_data_prep.ipynb`): seven format
error classes, warnings for examples without a system or user message and for examples over the
per-example token limit, token statistics, and billed tokens x epochs. Unlike the notebook, every
problem names the line number and the field, so a person can open the file at the right place.

Token counts are exact when `tiktoken` and its encoding file are already on disk (it downloads
encodings on first use, which our machines cannot do). Otherwise they are an approximation,
stated as such in the report: UTF-8 bytes / 4 per text (OpenAI's rule of thumb for English; it
overestimates other scripts, which errs on the safe side for cost) plus the cookbook's per-message
overheads.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

# The cookbook's vocabulary; `weight` (0|1 on assistant turns) is accepted by the API.
RECOGNIZED_KEYS = ("role", "content", "name", "function_call", "weight")
RECOGNIZED_ROLES = ("system", "user", "assistant", "function")
ERROR_KINDS = (
    "data_type",
    "missing_messages_list",
    "message_missing_key",
    "message_unrecognized_key",
    "unrecognized_role",
    "missing_content",
    "example_missing_assistant_message",
)
MIN_EXAMPLES = 10                    # OpenAI rejects training files with fewer
DEFAULT_MAX_TOKENS_PER_EXAMPLE = 65536  # gpt-4o / gpt-4o-mini / gpt-4.1 family (cookbook: 16385)

# The cookbook's epoch heuristic for n_epochs="auto".
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

APPROXIMATION = "approximation: UTF-8 bytes / 4 per text + 3 per message + 3 per example (no tiktoken encoding on disk)"


@dataclass
class Problem:
    line: int          # 1-based line in the JSONL file (0: the file as a whole)
    field: str         # e.g. "messages[2].role"
    kind: str          # one of ERROR_KINDS, or a warning kind
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.field}: {self.message} [{self.kind}]"


@dataclass
class Report:
    path: Path
    n_examples: int = 0
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    messages_per_example: list[int] = field(default_factory=list)
    tokens_per_example: list[int] = field(default_factory=list)
    assistant_tokens_per_example: list[int] = field(default_factory=list)
    n_missing_system: int = 0
    n_missing_user: int = 0
    n_too_long: int = 0
    max_tokens_per_example: int = DEFAULT_MAX_TOKENS_PER_EXAMPLE
    token_method: str = APPROXIMATION
    exact_tokens: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def error_counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.errors))

    def first_error(self) -> str:
        """One line naming the file, the first problem, and how many more there are."""
        if not self.errors:
            return ""
        more = len(self.errors) - 1
        tail = f" (and {more} more problem{'s' if more != 1 else ''}: {self.error_counts()})" if more else ""
        return f"{self.path}: {self.errors[0]}{tail}"

    def billed_tokens_per_epoch(self) -> int:
        return sum(min(self.max_tokens_per_example, n) for n in self.tokens_per_example)

    def stats(self) -> dict[str, dict[str, float]]:
        """min/max/mean/median/p10/p90 per distribution, as the cookbook prints them."""
        return {name: _distribution(values) for name, values in (
            ("messages_per_example", self.messages_per_example),
            ("tokens_per_example", self.tokens_per_example),
            ("assistant_tokens_per_example", self.assistant_tokens_per_example),
        ) if values}


def _distribution(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    def q(p: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(p * len(ordered)))])
    return {"min": float(ordered[0]), "max": float(ordered[-1]), "mean": statistics.fmean(ordered),
            "median": float(statistics.median(ordered)), "p10": q(0.1), "p90": q(0.9)}


# ---------------------------------------------------------------- token counting
def _tiktoken_encoder(encoding_name: str) -> Optional[Callable[[str], int]]:
    """tiktoken's encoder if the package and its encoding file are already cached; else None.

    Checking the cache first matters: tiktoken would otherwise try to download the file.
    """
    try:
        import tiktoken
        from tiktoken_ext import openai_public
    except ImportError:
        return None
    constructor = getattr(openai_public, "ENCODING_CONSTRUCTORS", {}).get(encoding_name)
    if constructor is None:
        return None
    url = f"https://openaipublic.blob.core.windows.net/encodings/{encoding_name}.tiktoken"
    cache_dir = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
                 or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    if not (Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()).exists():
        return None
    try:
        enc = tiktoken.get_encoding(encoding_name)
    except Exception:  # a corrupt cache file: fall back to the approximation rather than fail
        return None
    return lambda text: len(enc.encode(text, disallowed_special=()))


def approx_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


def count_tokens(messages: list[dict], encode: Callable[[str], int] = approx_tokens) -> int:
    """The cookbook's num_tokens_from_messages: 3 per message, +1 per name, +3 per example."""
    n = 3
    for message in messages:
        n += 3
        for key, value in message.items():
            if isinstance(value, str):
                n += encode(value)
            elif key == "function_call" and value is not None:
                n += encode(json.dumps(value, ensure_ascii=False))
            if key == "name":
                n += 1
    return n


def count_assistant_tokens(messages: list[dict], encode: Callable[[str], int] = approx_tokens) -> int:
    return sum(encode(m["content"]) for m in messages
               if m.get("role") == "assistant" and isinstance(m.get("content"), str))


# ---------------------------------------------------------------- checks
def check_example(example: Any, line: int = 0, keys: Iterable[str] = RECOGNIZED_KEYS,
                  roles: Iterable[str] = RECOGNIZED_ROLES) -> list[Problem]:
    """The cookbook's seven format checks on one parsed example; empty when it is fine. `keys` and
    `roles` narrow what a message may hold (prepare allows no function calls)."""
    keys, roles = tuple(keys), tuple(roles)
    if not isinstance(example, dict):
        return [Problem(line, "(example)", "data_type",
                        f"an example must be a JSON object, got {type(example).__name__}")]
    messages = example.get("messages")
    if not messages:
        return [Problem(line, "messages", "missing_messages_list", "missing or empty 'messages' list")]
    if not isinstance(messages, list):
        return [Problem(line, "messages", "missing_messages_list",
                        f"'messages' must be a list, got {type(messages).__name__}")]
    problems: list[Problem] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.append(Problem(line, where, "message_missing_key",
                                    f"a message must be an object with 'role' and 'content', got {type(message).__name__}"))
            continue
        missing = [k for k in ("role", "content") if k not in message]
        if missing:
            problems.append(Problem(line, f"{where}.{missing[0]}", "message_missing_key",
                                    f"message lacks {' and '.join(repr(k) for k in missing)}"))
        unknown = [k for k in message if k not in keys]
        if unknown:
            problems.append(Problem(line, f"{where}.{unknown[0]}", "message_unrecognized_key",
                                    f"unrecognized key(s) {unknown}; allowed: {list(keys)}"))
        role = message.get("role")
        if "role" in message and role not in roles:
            problems.append(Problem(line, f"{where}.role", "unrecognized_role",
                                    f"role {role!r} is not one of {list(roles)}"))
        content = message.get("content")
        if "content" in message and ((not content and not message.get("function_call"))
                                     or not isinstance(content, str)):
            got = "empty" if content in ("", None) else type(content).__name__
            problems.append(Problem(line, f"{where}.content", "missing_content",
                                    f"content must be a non-empty string, got {got}"))
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append(Problem(line, "messages", "example_missing_assistant_message",
                                "no message with role 'assistant' (nothing to learn from)"))
    return problems


def iter_jsonl(path: Path) -> Iterable[tuple[int, Any, Optional[Problem]]]:
    """(line number, parsed example or None, parse problem or None) for every line."""
    with open(path, encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                yield number, None, Problem(number, "(line)", "data_type", "blank line in a JSONL file")
                continue
            try:
                yield number, json.loads(text), None
            except json.JSONDecodeError as exc:
                yield number, None, Problem(number, "(line)", "data_type", f"not valid JSON: {exc.msg} at column {exc.colno}")


def check_examples(path: Path, max_tokens_per_example: int = DEFAULT_MAX_TOKENS_PER_EXAMPLE,
                   min_examples: int = MIN_EXAMPLES, encoding_name: str = "o200k_base") -> Report:
    """Run every cookbook check over a chat JSONL file and count tokens.

    Errors (the run must stop) and warnings (worth a look) each name the line and the field.
    """
    path = Path(path)
    report = Report(path=path, max_tokens_per_example=max_tokens_per_example)
    if not path.is_file():
        report.errors.append(Problem(0, "(file)", "missing_file", "file not found"))
        return report
    encode = _tiktoken_encoder(encoding_name)
    if encode is not None:
        report.token_method, report.exact_tokens = f"exact: tiktoken {encoding_name}", True
    else:
        encode = approx_tokens

    for line, example, parse_problem in iter_jsonl(path):
        report.n_examples += 1
        if parse_problem is not None:
            report.errors.append(parse_problem)
            continue
        problems = check_example(example, line)
        report.errors.extend(problems)
        if problems:
            continue
        messages = example["messages"]
        roles = {m["role"] for m in messages}
        if "system" not in roles:
            report.n_missing_system += 1
        if "user" not in roles:
            report.n_missing_user += 1
            report.warnings.append(Problem(line, "messages", "missing_user_message", "no message with role 'user'"))
        tokens = count_tokens(messages, encode)
        report.messages_per_example.append(len(messages))
        report.tokens_per_example.append(tokens)
        report.assistant_tokens_per_example.append(count_assistant_tokens(messages, encode))
        if tokens > max_tokens_per_example:
            report.n_too_long += 1
            report.warnings.append(Problem(line, "messages", "too_long",
                                           f"about {tokens} tokens, over the {max_tokens_per_example} limit: it will be truncated"))
    if report.n_missing_system:
        report.warnings.append(Problem(0, "messages", "missing_system_message",
                                       f"{report.n_missing_system} of {report.n_examples} examples have no system message"))
    if report.n_examples < min_examples:
        report.errors.append(Problem(0, "(file)", "too_few_examples",
                                     f"{report.n_examples} examples; OpenAI needs at least {min_examples} (50-100 recommended)"))
    return report


# ---------------------------------------------------------------- cost
def resolve_epochs(n_epochs: Any, n_examples: int) -> int:
    """n_epochs as configured, or the cookbook's guess at what "auto" will pick."""
    if n_epochs not in (None, "auto"):
        return int(n_epochs)
    n = max(1, n_examples)
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n)
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return TARGET_EPOCHS


@dataclass
class CostEstimate:
    n_epochs: int
    billed_tokens_per_epoch: int
    billed_tokens: int
    price_per_1k: Optional[float]
    cost_usd: Optional[float]
    exact_tokens: bool
    token_method: str = APPROXIMATION

    def __str__(self) -> str:
        cost = f" ~ ${self.cost_usd:,.2f}" if self.cost_usd is not None else " (price unknown for this model)"
        return (f"{self.billed_tokens_per_epoch:,} tokens x {self.n_epochs} epochs = "
                f"{self.billed_tokens:,} billed training tokens{cost} (token count {self.token_method})")


def estimate_cost(report: Report, n_epochs: Any = "auto", price_per_1k: Optional[float] = None) -> CostEstimate:
    """Billed training tokens (each example capped at the limit) x epochs, times the price."""
    epochs = resolve_epochs(n_epochs, len(report.tokens_per_example))
    per_epoch = report.billed_tokens_per_epoch()
    billed = per_epoch * epochs
    cost = None if price_per_1k is None else billed / 1000 * price_per_1k
    return CostEstimate(epochs, per_epoch, billed, price_per_1k, cost, report.exact_tokens, report.token_method)
