"""Stable record keys and content hashes, what a refresh diffs two acquisitions by.

The key is `source.key_field` (a url, an asin, an id) where the record has it, else a hash of its
content, so a record that moved in the file is still the same record. A page's sections keep the
page's key with their section suffix (`https://…/json.html/s3`). The content hash leaves out
`source.churn_fields` (prices, review counts, timestamps): a record whose only change is churn is
`same`.
"""
from __future__ import annotations

import orjson

from ..fileio import sha256_text

SECTION_SEP = "/s"


def content_hash(fields: dict, churn: set[str]) -> str:
    kept = {k: v for k, v in fields.items() if k not in churn}
    return sha256_text(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS, default=str).decode())[:24]


def record_key(record_id: str, fields: dict, key_field: str | None, churn: set[str]) -> str:
    value = fields.get(key_field) if key_field else None
    key = str(value) if value not in (None, "") else "sha:" + content_hash(fields, churn)
    where = record_id.rpartition("#")[2]
    section = where.partition(SECTION_SEP)[2] if SECTION_SEP in where else ""
    return f"{key}{SECTION_SEP}{section}" if section else key
