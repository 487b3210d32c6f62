"""Membership, counts, usage and expiry derived from a store's kvstore records."""

import pytest

from llama_stack_milvus.vector_io.store_records import (
    SECONDS_PER_DAY,
    derived_membership,
    expiry,
    stored_text_bytes,
    validate_expires_after,
)


def record(file_id: str, status: str, usage_bytes: int = 0) -> dict:
    return {"id": file_id, "status": status, "usage_bytes": usage_bytes}


def test_membership_counts_and_usage_come_from_the_file_records():
    records = [record("a", "completed", 10), record("b", "failed"), record("c", "completed", 5)]
    derived = derived_membership(records)
    assert derived["file_ids"] == ["a", "b", "c"]
    assert derived["file_counts"] == {"completed": 2, "failed": 1, "in_progress": 0, "cancelled": 0, "total": 3}
    assert derived["usage_bytes"] == 15


def test_an_empty_store_counts_nothing():
    assert derived_membership([])["file_counts"]["total"] == 0


def test_usage_bytes_counts_utf8_bytes_of_the_stored_text():
    chunks = [{"content": "héllo"}, {"content": [{"type": "text", "text": "ab"}, {"type": "image"}]}]
    assert stored_text_bytes(chunks) == len("héllo".encode()) + 2 == 8


def test_a_store_without_a_policy_never_expires():
    assert expiry({"last_active_at": 0, "status": "completed"}) == {"expires_at": None, "status": "completed"}


def test_a_store_expires_days_after_it_was_last_active():
    store = {"last_active_at": 1000, "expires_after": {"anchor": "last_active_at", "days": 2}}
    expires_at = 1000 + 2 * SECONDS_PER_DAY
    assert expiry(store, now=expires_at - 1) == {"expires_at": expires_at, "status": "completed"}
    assert expiry(store, now=expires_at) == {"expires_at": expires_at, "status": "expired"}


@pytest.mark.parametrize(
    ("policy", "named"),
    [
        ({"anchor": "created_at", "days": 1}, "anchor"),
        ({"anchor": "last_active_at", "days": 0}, "days"),
        ({"anchor": "last_active_at", "days": 366}, "days"),
        ({"anchor": "last_active_at", "days": "7"}, "days"),
        ({"anchor": "last_active_at", "days": True}, "days"),
        ({"days": 3}, "keys"),
    ],
)
def test_a_bad_expiry_policy_is_refused_naming_the_bad_part(policy, named):
    with pytest.raises(ValueError, match=named):
        validate_expires_after(policy)


def test_a_good_expiry_policy_passes():
    validate_expires_after({"anchor": "last_active_at", "days": 365})
    validate_expires_after(None)
