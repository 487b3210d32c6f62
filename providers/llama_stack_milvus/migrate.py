"""Copies the vector stores kept by llama-stack-milvus from one Milvus to another.

  export --from-db FILE --out DIR              rows of every collection of ours -> DIR (JSON lines)
  import --in DIR (--to-db FILE | --to-uri URI [--token T] [--db-name D])

Moving a deployment from a Lite file to a server, or from Milvus Lite 2.x to 3.x (3.x cannot open 2.x files),
is an export then an import; the stack's kvstore (store and file records) stays as it is, since ids do not
change. Imported collections are created in the current layout (attributes in the dynamic field, see
vector_io/attributes.py): exporting a 0.1 collection and importing it into a new file or server upgrades it.
A Lite 2.x file opens only with milvus-lite 2.5: run `export` in an environment that has it
(`pip install llama-stack-milvus milvus-lite==2.5.1`). Importing twice is safe: rows are upserted.
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from .vector_io.backend import MilvusBackend, open_lite_backend, open_remote_backend
from .vector_io.config import InlineMilvusConfig, RemoteMilvusConfig
from .vector_io.schema import (
    ATTRIBUTES_FIELD,
    CORE_FIELDS,
    GROUP_KEY,
    ROW_ID,
    STORE_FIELD,
    VECTOR,
    WRITE_BATCH_ROWS,
    AttributeLayout,
    create_chunk_collection,
    group_key_for,
    layout_of,
    row_to_chunk,
    upsert_rows,
)

MANIFEST = "manifest.json"
# Rows read from an export file before they are written (and flushed): a bounded memory footprint.
IMPORT_BATCH_ROWS = 10 * WRITE_BATCH_ROWS
# The provider's kvstore is not touched here; the configs below only open Milvus.
UNUSED_PERSISTENCE = {"namespace": "unused", "backend": "unused"}


def _our_collection(description: dict[str, Any]) -> tuple[int, bool, AttributeLayout] | None:
    """(dimension, shared, layout) for a collection with our schema, None for anything else."""
    fields = {field["name"]: field for field in description["fields"]}
    if not CORE_FIELDS <= fields.keys():
        return None
    layout = layout_of(description)
    if not layout.json_field and not description.get("enable_dynamic_field"):
        return None
    return int(fields[VECTOR]["params"]["dim"]), STORE_FIELD in fields, layout


async def export_collections(backend: MilvusBackend, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    client = backend.client
    manifest: dict[str, Any] = {"collections": []}
    for name in await backend.run("list collections", client.list_collections):
        shape = _our_collection(await backend.run(f"describe {name}", client.describe_collection, collection_name=name))
        if shape is None:
            continue
        dimension, shared, layout = shape
        await backend.run(f"load {name}", client.load_collection, collection_name=name)
        fields = sorted(CORE_FIELDS | ({STORE_FIELD} if shared else set()))
        iterator = await backend.run(
            f"read {name}",
            client.query_iterator,
            collection_name=name,
            batch_size=WRITE_BATCH_ROWS,
            output_fields=[*fields, layout.output_field],
        )
        rows = 0
        with (out_dir / f"{name}.jsonl").open("w") as sink:
            while batch := await asyncio.to_thread(iterator.next):
                for row in batch:
                    record = {field: row[field] for field in fields}
                    record[ATTRIBUTES_FIELD] = layout.read(row)
                    record[VECTOR] = [float(x) for x in record[VECTOR]]
                    sink.write(json.dumps(record) + "\n")
                rows += len(batch)
        iterator.close()
        manifest["collections"].append({"name": name, "dimension": dimension, "shared": shared, "rows": rows})
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


async def import_collections(backend: MilvusBackend, in_dir: Path, config: InlineMilvusConfig | RemoteMilvusConfig):
    manifest = json.loads((in_dir / MANIFEST).read_text())
    client = backend.client
    for entry in manifest["collections"]:
        name = entry["name"]
        if not await backend.run(f"check {name}", client.has_collection, collection_name=name):
            await create_chunk_collection(backend, name, entry["dimension"], config, entry["shared"])
        layout = layout_of(await backend.run(f"describe {name}", client.describe_collection, collection_name=name))
        with (in_dir / f"{name}.jsonl").open() as source:
            batch: list[dict[str, Any]] = []
            for line in source:
                record = json.loads(line)
                attributes = record.pop(ATTRIBUTES_FIELD)
                row = record | layout.columns(attributes)
                if layout.group_key:
                    row[GROUP_KEY] = group_key_for(row_to_chunk(row, layout).document_id, row[ROW_ID])
                batch.append(row)
                if len(batch) == IMPORT_BATCH_ROWS:
                    await upsert_rows(backend, name, batch)
                    batch = []
            if batch:
                await upsert_rows(backend, name, batch)
    return manifest


def _target_config(args: argparse.Namespace) -> InlineMilvusConfig | RemoteMilvusConfig:
    if args.to_db:
        return InlineMilvusConfig(db_path=args.to_db, persistence=UNUSED_PERSISTENCE)
    return RemoteMilvusConfig(uri=args.to_uri, token=args.token, db_name=args.db_name, persistence=UNUSED_PERSISTENCE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write every collection of a Milvus Lite file to a folder")
    export.add_argument("--from-db", required=True, help="Milvus Lite file (2.x needs milvus-lite 2.5)")
    export.add_argument("--out", required=True, type=Path)
    load = commands.add_parser("import", help="load an exported folder into a Milvus Lite file or a server")
    load.add_argument("--in", dest="in_dir", required=True, type=Path)
    target = load.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-db", help="Milvus Lite file to create or extend")
    target.add_argument("--to-uri", help="Milvus server URI, e.g. http://localhost:19530")
    load.add_argument("--token", help="with --to-uri: user:password or an API key")
    load.add_argument("--db-name", help="with --to-uri: Milvus database")
    args = parser.parse_args(argv)

    started = time.monotonic()
    if args.command == "export":
        if not Path(args.from_db).expanduser().exists():
            parser.error(f"--from-db {args.from_db} does not exist")
        config = InlineMilvusConfig(db_path=args.from_db, persistence=UNUSED_PERSISTENCE)
        backend = open_lite_backend(config)
        manifest = asyncio.run(export_collections(backend, args.out))
    else:
        if not (args.in_dir / MANIFEST).exists():
            parser.error(f"--in {args.in_dir} has no {MANIFEST}: give the folder written by `export`")
        config = _target_config(args)
        backend = open_lite_backend(config) if args.to_db else open_remote_backend(config)
        manifest = asyncio.run(import_collections(backend, args.in_dir, config))
    backend.close()
    rows = sum(entry["rows"] for entry in manifest["collections"])
    print(
        f"{args.command}: {len(manifest['collections'])} collections, {rows} rows, {time.monotonic() - started:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
