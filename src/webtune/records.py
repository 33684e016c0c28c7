"""What sources yield: a record, or a rejection of something that could not become one."""
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Record:
    """One input record. `id` is `<source>:<path or snapshot>#<1-based line, row or index>`."""

    id: str
    source: str
    fields: dict[str, Any]
    group: str | None = None  # keeps related records (windows of one transcript) in one split
    repairs: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Rejection:
    """An input that never became a record (a malformed line, an error record, a broken page)."""

    id: str
    source: str
    reason: str
    detail: str = ""


def record_id(source: str, where: str, index: int) -> str:
    return f"{source}:{where}#{index}"
