"""Milvus Lite 3.x's searches, without a Python pass over every row of the collection on every search.

Before a vector or a BM25 search reads its index, Milvus Lite 3.x works out which rows it may return: the latest
version of each primary key, not deleted. It does so on every search, in Python, one dict look-up after another
over every row of every segment: at 100k rows most of a vector search and nearly all of a keyword search with our
BM25 scorer (docs/performance.md, "Where a hybrid search's time goes"). Segments are immutable files, so that
answer only changes with the set of segments or the flushed tombstones. `install()` replaces Lite's two search
paths with copies that keep it per set of segment files (and the tombstones it was made with), then apply what the
memtable holds (newer versions, pending deletes: few rows, as we flush after every write on Lite) per search.
Everything else is Lite 3.2.2's code as it is: per-segment index searches, filters, merge order, materialising.
Results are identical (tests/integration/test_lite_live_rows.py compares both through upserts, deletes, flushes,
compactions and filters). Searches naming partitions, and segments holding a key twice, take Lite's own path.
Where the installed Milvus Lite is not 3.2.2, nothing is replaced.
"""

import contextlib
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from llama_stack.log import get_logger

logger = get_logger(name=__name__, category="vector_io::milvus")

_VERSION = "3.2.2"
_CACHED_SEGMENT_SETS = 32  # about one per collection searched lately; each holds one bool per row
_cache: OrderedDict[tuple[tuple[str, str], ...], tuple[tuple[np.ndarray, ...], dict[Any, int], list[np.ndarray]]] = (
    OrderedDict()
)
_cache_lock = threading.Lock()


def install() -> bool:
    """Replaces Milvus Lite 3.2.2's dense and sparse search paths (once per process); False on any other version."""
    try:
        import milvus_lite
        from milvus_lite.engine import collection
    except ImportError:
        return False
    if getattr(collection.execute_search_with_index, "cached_live_rows", False):
        return True
    if milvus_lite.__version__ != _VERSION:
        logger.info(f"Milvus Lite {milvus_lite.__version__}: lite_live_rows repeats {_VERSION} only, not installed")
        return False
    _search_dense.original = collection.execute_search_with_index  # type: ignore[attr-defined]
    _search_sparse.original = collection.Collection._search_sparse  # type: ignore[attr-defined]
    _search_dense.cached_live_rows = True  # type: ignore[attr-defined]
    collection.execute_search_with_index = _search_dense
    collection.Collection._search_sparse = _search_sparse
    return True


def _own_path(segments: Sequence[Any], partition_names: list[str] | None) -> bool:
    """Where Lite's own pass is needed: with partitions named, its dense path de-duplicates among their segments
    only; a segment holding a key twice would need per-row look-ups (Lite never writes one: flushes and compactions
    keep one version per key)."""
    return bool(partition_names) or any(len(segment.pk_to_row) != len(segment.pks) for segment in segments)


def _segment_live_rows(segments: Sequence[Any], delta_index: Any) -> list[np.ndarray]:
    """Per segment, its rows that hold their key's latest version among the segments and no flushed tombstone
    deletes. Kept per set of segments and the tombstones it was made with: the arrays are shared, never modify
    them."""
    key = tuple((segment.partition, segment.file_path) for segment in segments)
    seqs = tuple(segment.seqs for segment in segments)
    tombstones = delta_index._map
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
    # The same segment objects, not only the same file names: a collection dropped and made again under its name
    # writes files of the same names. Each entry holds its segments' seqs arrays, so their ids stay theirs.
    if (
        cached is not None
        and all(mine is theirs for mine, theirs in zip(cached[0], seqs, strict=True))
        and cached[1] == tombstones
    ):
        return cached[2]
    rows = [list(zip(segment.pks, segment.seqs.tolist(), strict=True)) for segment in segments]
    newest: dict[Any, int] = {}
    for pk, seq in itertools.chain.from_iterable(rows):
        if seq > newest.get(pk, -1):
            newest[pk] = seq
    masks = [
        np.fromiter((newest[pk] == seq and tombstones.get(pk, -1) <= seq for pk, seq in keyed), bool, len(keyed))
        for keyed in rows
    ]
    with _cache_lock:
        _cache[key] = (seqs, dict(tombstones), masks)
        _cache.move_to_end(key)
        while len(_cache) > _CACHED_SEGMENT_SETS:
            _cache.popitem(last=False)
    return masks


def _live_rows(
    segments: Sequence[Any],
    delta_index: Any,
    newer: dict[Any, int],
    pending_deletes: dict[Any, tuple[int, str]],
    deletes_by_partition: bool,
) -> list[np.ndarray]:
    """_segment_live_rows, less the rows the memtable makes stale (a newer version of the key in `newer`) or deletes
    (a pending delete with a greater sequence number; Lite's sparse path honours the delete's partition, its dense
    path does not)."""
    from milvus_lite.constants import ALL_PARTITIONS

    shared = _segment_live_rows(segments, delta_index)
    masks = list(shared)
    for pk in newer.keys() | pending_deletes.keys():
        for index, segment in enumerate(segments):
            row = segment.pk_to_row.get(pk)
            if row is None or not masks[index][row]:
                continue
            seq = int(segment.seqs[row])
            delete = pending_deletes.get(pk)
            deleted = delete is not None and delete[0] > seq
            if deleted and deletes_by_partition:
                deleted = delete[1] in (ALL_PARTITIONS, segment.partition)
            if deleted or newer.get(pk, -1) > seq:
                if masks[index] is shared[index]:
                    masks[index] = shared[index].copy()
                masks[index][row] = False
    return masks


def _columns(table: Any, output_fields: list[str] | None, pk_field: str) -> list[str]:
    """The columns of a segment's table that a hit's projection reads: Lite materialises every column of every hit
    (a vector is hundreds of Python floats) and drops most of them. `$meta` where a dynamic key is asked for."""
    names = [name for name in table.column_names if name != "_seq"]
    if output_fields is None or "*" in output_fields:
        return names
    wanted = {pk_field, *output_fields}
    if "$meta" in names and any(field not in names for field in output_fields):
        wanted.add("$meta")
    return [name for name in names if name in wanted]


def _row(table: Any, row: int, names: list[str]) -> dict:
    """Segment.row_to_dict (3.2.2) of only these columns: `$meta`'s keys unpacked beside it, as there."""
    record = {name: table.column(name)[row].as_py() for name in names}
    meta = record.get("$meta")
    if isinstance(meta, str):
        with contextlib.suppress(ValueError):
            meta = json.loads(meta)
    if isinstance(meta, dict):
        record.update(meta)
    return record


def _found(local_ids: np.ndarray, distances: np.ndarray) -> Iterator[tuple[int, int, float]]:
    """(query, local id, distance) of each result of an index search; a query's results end at the first -1."""
    for query, (ids, row_distances) in enumerate(zip(local_ids, distances, strict=True)):
        for local_id, distance in zip(ids.tolist(), row_distances.tolist(), strict=True):
            if local_id < 0:
                break
            yield query, local_id, distance


def _newest_in_segments(segments: Sequence[Any], pk: Any) -> int:
    rows = ((segment, segment.pk_to_row.get(pk)) for segment in segments)
    return max((int(segment.seqs[row]) for segment, row in rows if row is not None), default=-1)


def _search_dense(
    query_vectors: np.ndarray,
    segments: Sequence[Any],
    memtable: Any,
    delta_index: Any,
    top_k: int,
    metric_type: str,
    pk_field: str,
    vector_field: str,
    partition_names: list[str] | None = None,
    compiled_filter: Any = None,
    output_fields: list[str] | None = None,
    indexed_filter_plan: Any = None,
    project_record_fn: Any = None,
    search_params: dict[str, Any] | None = None,
) -> list[list[dict]]:
    """milvus_lite.search.executor_indexed.execute_search_with_index (3.2.2), its per-row masks from _live_rows."""
    from milvus_lite.index.brute_force import BruteForceIndex

    segments = tuple(segments)
    if _own_path(segments, partition_names):
        return _search_dense.original(  # type: ignore[attr-defined]
            query_vectors, segments, memtable, delta_index, top_k, metric_type, pk_field, vector_field,
            partition_names, compiled_filter, output_fields, indexed_filter_plan, project_record_fn, search_params,
        )  # fmt: skip
    if query_vectors.ndim == 1:
        query_vectors = query_vectors.reshape(1, -1)
    query_vectors = query_vectors.astype(np.float32, copy=False)
    nq = int(query_vectors.shape[0])
    if nq == 0 or top_k <= 0:
        return [[] for _ in range(nq)]
    segments = tuple(segment for segment in segments if segment.num_rows > 0)
    mt_pks, mt_seqs, mt_vecs, mt_row_refs, mt_table = memtable.to_search_snapshot(
        vector_field=vector_field, partition_names=None, include_table=compiled_filter is not None
    )
    if not segments and not mt_pks:
        return [[] for _ in range(nq)]
    mt_deletes = memtable.delete_index_snapshot()
    mt_newest: dict[Any, int] = {}
    for pk, seq in zip(mt_pks, mt_seqs.tolist(), strict=True):
        mt_newest[pk] = max(seq, mt_newest.get(pk, -1))
    masks = _live_rows(segments, delta_index, mt_newest, mt_deletes, deletes_by_partition=False)

    candidates: list[list[tuple[float, int, int]]] = [[] for _ in range(nq)]
    sources: list[list[Any]] = []

    def recall(source: int, vectors: np.ndarray, live: np.ndarray, index: Any) -> None:
        if not live.any():
            return
        if index is None:
            index = BruteForceIndex.build(vectors, metric_type)
        # No mask where every row is live: Lite's IDSelector path bounds ANN traversal even when it excludes nothing.
        local_ids, distances = index.search(
            query_vectors, top_k, valid_mask=None if live.all() else live, params=search_params
        )
        for query, local_id, distance in _found(local_ids, distances):
            candidates[query].append((distance, source, local_id))

    if compiled_filter is not None:
        from milvus_lite.search.filter import evaluate_mask
        from milvus_lite.search.indexed_filter import evaluate_segment_filter
    for segment, live in zip(segments, masks, strict=True):
        vectors, vector_null_mask = segment.vector_data(vector_field)
        if compiled_filter is not None:
            live = live & evaluate_segment_filter(segment, compiled_filter, indexed_filter_plan)
        if vector_null_mask is not None:
            live = live & vector_null_mask
        sources.append(segment.pks)
        recall(len(sources) - 1, vectors, live, segment.indexes.get(vector_field))
    if mt_pks:
        live = np.fromiter(
            (
                seq >= _newest_in_segments(segments, pk)
                and seq == mt_newest[pk]
                and not delta_index.is_deleted(pk, seq)
                and mt_deletes.get(pk, (-1,))[0] <= seq
                for pk, seq in zip(mt_pks, mt_seqs.tolist(), strict=True)
            ),
            dtype=bool,
            count=len(mt_pks),
        )
        if compiled_filter is not None and mt_table is not None:
            live = live & evaluate_mask(compiled_filter, mt_table).astype(bool)
        sources.append(mt_pks)
        recall(len(sources) - 1, mt_vecs, live, None)

    if project_record_fn is not None:
        project_entity = project_record_fn
    elif output_fields is None:

        def project_entity(record: dict) -> dict:
            return {k: v for k, v in record.items() if k != pk_field and k != vector_field}
    else:
        keep = set(output_fields) - {pk_field}

        def project_entity(record: dict) -> dict:
            return {k: record[k] for k in keep if k in record}

    columns = [_columns(segment.table, output_fields, pk_field) for segment in segments]
    results = []
    for per_query in candidates:
        per_query.sort(key=lambda candidate: (candidate[0], candidate[1], candidate[2]))
        hits = []
        for distance, source, local_id in per_query[:top_k]:
            if source < len(segments):
                record = _row(segments[source].table, local_id, columns[source])
            else:
                record = memtable.materialize_row(*mt_row_refs[local_id])
            pk = record.get(pk_field) if pk_field in record else sources[source][local_id]
            hits.append({"id": pk, "distance": distance, "entity": project_entity(record)})
        results.append(hits)
    return results


def _search_sparse(
    self: Any,
    query_vectors: list,
    vector_field: str,
    top_k: int,
    metric_type: str,
    partition_names: list[str] | None,
    expr: str | None,
    output_fields: list[str] | None,
    timezone: str | None = None,
) -> list[list[dict]]:
    """milvus_lite.engine.collection.Collection._search_sparse (3.2.2), its per-row masks from _live_rows."""
    from milvus_lite.analyzer.sparse import bytes_to_sparse
    from milvus_lite.engine.projection import build_projection_plan, project_record
    from milvus_lite.index.sparse_factory import (
        _search_prepared_sparse_index,
        create_sparse_index,
        sparse_index_matches,
    )
    from milvus_lite.search.indexed_filter import evaluate_segment_filter

    segments, delta_snap = self._read_snapshot()
    if _own_path(segments, partition_names):
        return _search_sparse.original(  # type: ignore[attr-defined]
            self, query_vectors, vector_field, top_k, metric_type, partition_names, expr, output_fields, timezone
        )
    projection_plan = build_projection_plan(output_fields, self._schema, api_kind="search")
    sparse_spec = self._index_specs.get(vector_field)
    index_params = sparse_spec.build_params if sparse_spec else {}
    query_sparse = self._prepare_sparse_queries(query_vectors, vector_field)
    nq = len(query_sparse)
    compiled_filter = self._compile_filter(expr, timezone=timezone) if expr else None
    indexed_filter_plan = self._indexed_filter_plan(compiled_filter)
    candidates: list[list[tuple[float, Any, Any]]] = [[] for _ in range(nq)]

    mt_deletes = self._memtable.delete_index_snapshot()
    mt_newest = {pk: seq for pk, (_, _, seq) in self._memtable.pk_index_snapshot()}
    masks = _live_rows(segments, delta_snap, mt_newest, mt_deletes, deletes_by_partition=True)
    for segment, live in zip(segments, masks, strict=True):
        table = segment.table
        if table is None or len(table) == 0:
            continue
        index = segment.sparse_indexes.get(vector_field)
        if not sparse_index_matches(index, metric_type, index_params):
            rows = table.column(vector_field).to_pylist()
            index = create_sparse_index(metric_type, index_params)
            index.build([bytes_to_sparse(r) if isinstance(r, bytes) else (r or {}) for r in rows])
            segment.sparse_indexes[vector_field] = index
        if compiled_filter is not None:
            live = live & evaluate_segment_filter(segment, compiled_filter, indexed_filter_plan)
        if not live.any():
            continue
        local_ids, distances = _search_prepared_sparse_index(index, query_sparse, top_k, valid_mask=live)
        for query, local_id, distance in _found(local_ids, distances):
            candidates[query].append((distance, segment.pks[local_id], (table, local_id)))

    # The memtable's rows as Lite searches them: an index rebuilt each search (small and mutable).
    mt_pks, mt_sparse, mt_refs = [], [], []
    for pk, seq, record in self._memtable.active_record_snapshots(partition_names=partition_names):
        if delta_snap.is_deleted(pk, seq) or max(mt_newest.get(pk, -1), _newest_in_segments(segments, pk)) > seq:
            continue
        raw = record.get(vector_field)
        mt_pks.append(pk)
        mt_sparse.append(bytes_to_sparse(raw) if isinstance(raw, bytes) else (raw or {}))
        mt_refs.append((record, seq))
    if mt_pks:
        mt_valid = np.ones(len(mt_pks), dtype=bool)
        if compiled_filter is not None:
            from milvus_lite.search.filter.eval.python_backend import _eval_row

            for i in range(len(mt_pks)):
                if not _eval_row(compiled_filter.ast, mt_refs[i][0]):
                    mt_valid[i] = False
        mt_index = create_sparse_index(metric_type, index_params)
        mt_index.build(mt_sparse, valid_mask=mt_valid)
        local_ids, distances = _search_prepared_sparse_index(mt_index, query_sparse, top_k)
        for query, local_id, distance in _found(local_ids, distances):
            candidates[query].append((distance, mt_pks[local_id], mt_refs[local_id]))

    def from_memtable(source: Any) -> bool:
        return isinstance(source, tuple) and bool(source) and isinstance(source[0], dict)

    results = []
    for per_query in candidates:
        best: dict[Any, tuple[int, tuple[float, Any, Any]]] = {}
        for candidate in per_query:
            _, pk, source = candidate
            if from_memtable(source):
                seq = int(source[1])
            else:
                table, row = source
                seq = int(table.column("_seq")[row].as_py())
            if pk not in best or seq > best[pk][0]:
                best[pk] = (seq, candidate)
        deduped = sorted((candidate for _, candidate in best.values()), key=lambda candidate: candidate[0])
        hits = []
        for distance, pk, source in deduped[:top_k]:
            if from_memtable(source):
                record = source[0]
            else:
                table, row = source
                names = projection_plan.engine_fields or table.column_names
                record = {
                    name: table.column(name)[row].as_py()
                    for name in table.column_names
                    if name in names and name not in ("_seq", "_partition")
                }
            entity = project_record(record, self._schema, projection_plan)
            hits.append({"id": pk, "distance": distance, "entity": entity})
        results.append(hits)
    return results
