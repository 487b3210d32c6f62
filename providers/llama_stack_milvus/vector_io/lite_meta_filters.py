"""Milvus Lite 3.x's filters on dynamic-field attributes, without parsing every row's JSON on every search.

Our attributes are top-level keys of Milvus' dynamic field (`$meta`, one JSON document per row). To filter on one,
Milvus Lite 3.x parses the JSON of every row of every segment into a column per key the filter names, on every
filtered search (hybrid_backend._augment_table): at 100k rows most of a filtered search's time. A segment's table
never changes, so `install()` keeps the columns made for each table (weakly: they go with the segment) and the
keys asked for. Results are Lite's own: the same columns, the same evaluation (tests/integration/
test_lite_live_rows.py runs filtered searches both ways). Where the installed Milvus Lite is not 3.2.2, nothing
is replaced.
"""

import threading
import weakref
from typing import Any

import pyarrow as pa

# By id(table), dropped when the table goes (pyarrow tables are not hashable, so no WeakKeyDictionary).
_augmented: dict[int, dict[frozenset[str], pa.Table]] = {}
_lock = threading.Lock()


def install() -> bool:
    """Caches Milvus Lite 3.2.2's per-table attribute columns (once per process); False on any other version."""
    try:
        import milvus_lite
        from milvus_lite.search.filter.eval import hybrid_backend
    except ImportError:
        return False
    if milvus_lite.__version__ != "3.2.2":
        return False
    if getattr(hybrid_backend._augment_table, "cached", False):
        return True
    original = hybrid_backend._augment_table

    def augment_table(table: pa.Table, keys: Any) -> pa.Table:
        wanted = frozenset(keys)
        with _lock:
            found = _augmented.get(id(table), {}).get(wanted)
        if found is None:
            found = original(table, keys)  # raises on mixed types: Lite then evaluates row by row, uncached
            with _lock:
                if id(table) not in _augmented:
                    _augmented[id(table)] = {}
                    weakref.finalize(table, _augmented.pop, id(table), None)
                _augmented[id(table)][wanted] = found
        return found

    augment_table.cached = True  # type: ignore[attr-defined]
    augment_table.original = original  # type: ignore[attr-defined]
    hybrid_backend._augment_table = augment_table
    return True
