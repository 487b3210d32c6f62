"""What a vector store's kvstore records say, computed from them: membership, counts and usage from the per-file
records, expiry from the store's policy. Pure functions; openai_store.py reads and writes the records."""

import time
from collections import Counter
from typing import Any

# Derived from the file records on every read, never trusted from (nor written to) the store's record.
DERIVED_FIELDS = ("file_ids", "file_counts", "usage_bytes")
FILE_STATUSES = ("completed", "failed", "in_progress", "cancelled")
SECONDS_PER_DAY = 86_400
MAX_EXPIRY_DAYS = 365


def derived_membership(file_records: list[dict[str, Any]]) -> dict[str, Any]:
    """file_ids, file_counts and usage_bytes of a store from the records of its files."""
    statuses = Counter(record["status"] for record in file_records)
    return {
        "file_ids": [record["id"] for record in file_records],
        "file_counts": {status: statuses[status] for status in FILE_STATUSES} | {"total": len(file_records)},
        "usage_bytes": sum(record.get("usage_bytes", 0) for record in file_records),
    }


def stored_text_bytes(chunks: list[dict[str, Any]]) -> int:
    """The UTF-8 size of the text stored for a file: what OpenAI reports as its usage_bytes."""
    total = 0
    for chunk in chunks:
        content = chunk.get("content")
        if isinstance(content, str):
            total += len(content.encode())
        elif isinstance(content, list):  # interleaved content: only its text items are stored as text
            total += sum(len(item.get("text", "").encode()) for item in content if isinstance(item, dict))
    return total


def validate_expires_after(expires_after: dict[str, Any] | None) -> None:
    """OpenAI's policy: {"anchor": "last_active_at", "days": 1..365}. Raises ValueError naming the bad part."""
    if expires_after is None:
        return
    if set(expires_after) != {"anchor", "days"}:
        raise ValueError(f"expires_after must have exactly the keys anchor and days; got {sorted(expires_after)}")
    if expires_after["anchor"] != "last_active_at":
        raise ValueError(f"expires_after.anchor must be 'last_active_at'; got {expires_after['anchor']!r}")
    days = expires_after["days"]
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRY_DAYS:
        raise ValueError(f"expires_after.days must be an integer from 1 to {MAX_EXPIRY_DAYS}; got {days!r}")


def expiry(store: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """expires_at and status of a store under its expires_after policy (the mixin stored the policy and never
    applied it: expires_at stayed None and the store lived for ever)."""
    policy = store.get("expires_after")
    if not policy:
        return {"expires_at": None, "status": store.get("status", "completed")}
    expires_at = int(store["last_active_at"]) + int(policy["days"]) * SECONDS_PER_DAY
    expired = (time.time() if now is None else now) >= expires_at
    return {"expires_at": expires_at, "status": "expired" if expired else "completed"}


def attach_lease(vector_store_id: str, file_id: str) -> str:
    """The lease that one attach or delete of a file in a store holds (see leases.py)."""
    return f"attach:{vector_store_id}:{file_id}"
