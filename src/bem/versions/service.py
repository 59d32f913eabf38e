"""Versions: turning a stream of element documents into an immutable, content-addressed version.

An upload runs in two passes so memory stays bounded by the GlobalId index, not the body:

1. validate every document, reject duplicates and references to GlobalIds the upload does
   not hold, and spool the validated documents to a temporary file while indexing
   ``global_id -> (name, ifc_class)``;
2. re-read the spool in batches, resolve GlobalId references (``type``, ``container``,
   ``parent``, ``groups``) against the index, hash each canonical payload and write payloads
   (only new ones), the version's ``global_id -> hash`` map and its relations.

The version's own rows are one transaction: a failed upload leaves no version. On
PostgreSQL payloads commit batch by batch (``_batch_writer``), so one that failed after
pass 1 may leave unused payloads; bad input is found in pass 1 and leaves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, Protocol

import anyio.to_thread
import orjson
import structlog
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bem.config import Settings
from bem.events import service as events
from bem.kit.canonical import content_hash, normalize
from bem.kit.db import commit_early
from bem.kit.dberrors import classify, sqlstate
from bem.kit.errors import NotFound, Problem, Unprocessable
from bem.kit.metrics import Metrics
from bem.kit.ndjson import NDJSON_TYPES, iter_body, media_type
from bem.kit.pagination import decode_time_id_cursor, page_of, time_id_key
from bem.kit.storage import SourceStore
from bem.projects.models import Model
from bem.versions import repository
from bem.versions.facts import facts_of
from bem.versions.models import Version
from bem.versions.schemas import ElementIn

REF_FIELDS = ("type", "container", "parent")
DERIVED_RELATIONS = {"type": "typed_by", "container": "contained_in", "parent": "aggregated_by"}
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
# After a large upload the planner's row estimates are stale until autovacuum catches up;
# bench/query.py measured selector pages at 100k elements going from 265-600 ms to 8-170 ms
# once the tables were analysed.
ANALYZE_AFTER_ELEMENTS = 5000
WRITE_ATTEMPTS = 3
INLINE_BATCH = 100
log = structlog.get_logger("bem.versions")


# Called with a phase ("extract": documents validated, "store": elements written), a count
# and, when known, the total.
OnProgress = Callable[[str, int, int | None], Awaitable[None]]
PROGRESS_EVERY = 500
# Called with the session and the ready version just before the version commits; what it
# writes commits with the version or not at all (an import job records its success so).
BeforeCommit = Callable[[AsyncSession, Version], Awaitable[None]]


@dataclass
class UploadMeta:
    source_format: str
    message: str | None = None
    source_name: str | None = None
    source_schema: str | None = None
    source_key: str | None = None
    units: dict[str, Any] | None = None
    max_elements: int = 2_000_000
    batch_size: int = 2000
    on_progress: OnProgress | None = None
    before_commit: BeforeCommit | None = None


class SourceInfo(Protocol):
    """The uploaded bytes' digest and size, read once the body has been consumed."""

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class StoredSource:
    sha256: str
    size: int


@dataclass
class _Spool:
    """Validated documents on disk plus the index that resolves references between them."""

    file: IO[bytes]
    index: dict[str, tuple[str | None, str]] = field(default_factory=dict)


class SourceHasher:
    """Wraps a body stream to record the bytes' SHA-256 and size as they pass."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.digest = hashlib.sha256()
        self.size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self.digest.update(chunk)
            self.size += len(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


MAX_FIELD_ERRORS = 20


def _field_errors(exc: ValidationError, global_id: Any) -> list[dict[str, Any]]:
    gid = global_id if isinstance(global_id, str) else None
    return [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"], "global_id": gid}
        for e in exc.errors(include_input=False, include_url=False)[:MAX_FIELD_ERRORS]
    ]


def _unknown_reference(gid: str, key: str, ref: str) -> Unprocessable:
    return Unprocessable(
        f"element {gid}: {key} {ref} is not an element of this upload; "
        'give it as {"global_id", "name", "ifc_class"}'
    )


def _references(element: ElementIn) -> Iterator[tuple[str, str]]:
    """The GlobalIds ``element`` refers to by GlobalId alone (they must be in the upload)."""
    for key in REF_FIELDS:
        if isinstance(ref := getattr(element, key), str):
            yield key, ref
    yield from (("group", g) for g in element.groups if isinstance(g, str))


async def _spool(
    documents: AsyncIterator[tuple[str, dict[str, Any]]], meta: UploadMeta, spool: _Spool
) -> None:
    """Pass 1: validate and spool. Every reference is checked here, before anything is
    written (on PostgreSQL payloads commit batch by batch in pass 2)."""
    invalid: list[str] = []  # the first few invalid elements are all reported, not one
    errors: list[dict[str, Any]] = []
    # References to elements not seen yet, with who referred first (as the index, its size is
    # bounded by the body's).
    pending: dict[str, tuple[str, str]] = {}
    async for where, raw in documents:
        try:
            element = ElementIn.model_validate(raw)
        except ValidationError as exc:
            invalid.append(where)
            errors.extend(
                _field_errors(exc, raw.get("global_id") if isinstance(raw, dict) else None)
            )
            if len(errors) >= MAX_FIELD_ERRORS:
                break
            continue
        if invalid:
            continue  # the upload fails: only look for more invalid elements
        if element.global_id in spool.index:
            raise Unprocessable(
                f"{where}: GlobalId {element.global_id} appears more than once", at=where
            )
        if len(spool.index) >= meta.max_elements:
            raise Problem(
                f"An upload may hold at most {meta.max_elements} elements.",
                status=413,
                slug="too-many-elements",
            )
        spool.index[element.global_id] = (element.name, element.ifc_class)
        pending.pop(element.global_id, None)
        for key, ref in _references(element):
            if ref not in spool.index:
                pending.setdefault(ref, (element.global_id, key))
        spool.file.write(element.model_dump_json().encode() + b"\n")
        if meta.on_progress is not None and len(spool.index) % PROGRESS_EVERY == 0:
            await meta.on_progress("extract", len(spool.index), None)
    if invalid:
        more = f" and {len(invalid) - 1} more" if len(invalid) > 1 else ""
        raise Unprocessable(
            f"{invalid[0]}{more}: the element is invalid",
            at=invalid[0],
            errors=errors[:MAX_FIELD_ERRORS],
        )
    if pending:
        ref, (gid, key) = next(iter(pending.items()))
        raise _unknown_reference(gid, key, ref)


def _resolve(ref: Any, index: dict[str, tuple[str | None, str]]) -> Any:
    if ref is None:
        return None
    if isinstance(ref, str):  # known: pass 1 checked every GlobalId reference (_spool)
        name, ifc_class = index[ref]
        return {"global_id": ref, "name": name, "ifc_class": ifc_class}
    known = index.get(ref["global_id"])
    if known is not None:
        ref = {**ref, "name": ref["name"] or known[0], "ifc_class": ref["ifc_class"] or known[1]}
    return ref


def _payload(
    element: dict[str, Any], index: dict[str, tuple[str | None, str]]
) -> tuple[str, dict[str, Any], set[tuple[str, str]]]:
    """The canonical payload of one validated element, and its relation edges."""
    gid = element.pop("global_id")
    for key in REF_FIELDS:
        element[key] = _resolve(element[key], index)
    groups = [_resolve(g, index) for g in element["groups"]]
    element["groups"] = sorted(groups, key=lambda g: g["global_id"])
    edges = {(r["kind"], r["target"]) for r in element["relations"]}
    element["relations"] = [{"kind": k, "target": t} for k, t in sorted(edges)]
    for key, kind in DERIVED_RELATIONS.items():
        if element[key] is not None:
            edges.add((kind, element[key]["global_id"]))
    edges.update(("assigned_to_group", g["global_id"]) for g in groups)
    return gid, normalize(element), edges


class Batch(NamedTuple):
    """Rows to write for a batch of elements: new payloads with their takeoff facts, the
    version's elements and relations, and the number of elements per class."""

    payloads: list[dict[str, Any]]
    facts: list[dict[str, Any]]
    elements: list[dict[str, Any]]
    relations: list[dict[str, Any]]
    classes: Counter[str]


def _build_batch(
    lines: list[bytes], index: dict[str, tuple[str | None, str]], version_id: uuid.UUID
) -> Batch:
    payloads: dict[str, dict[str, Any]] = {}
    elements: list[dict[str, Any]] = []
    relations: list[dict[str, Any]] = []
    classes: Counter[str] = Counter()
    for line in lines:
        gid, doc, edges = _payload(orjson.loads(line), index)
        digest = content_hash(doc)
        payloads[digest] = {
            "hash": digest,
            "ifc_class": doc["ifc_class"],
            "name": doc["name"],
            "doc": doc,
        }
        elements.append({"version_id": version_id, "global_id": gid, "payload_hash": digest})
        relations.extend(
            {"version_id": version_id, "source": gid, "kind": k, "target": t} for k, t in edges
        )
        classes[doc["ifc_class"]] += 1
    facts = [facts_of(digest, row["doc"]) for digest, row in payloads.items()]
    return Batch(list(payloads.values()), facts, elements, relations, classes)


def _batches(file: IO[bytes], size: int) -> Iterator[list[bytes]]:
    file.seek(0)
    batch: list[bytes] = []
    for line in file:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _built_batches(
    file: IO[bytes], index: dict[str, tuple[str | None, str]], version_id: uuid.UUID, size: int
) -> AsyncIterator[Batch]:
    """Batches built in a worker thread one ahead of the consumer, so hashing the next batch
    overlaps writing this one (measured by bench/ingest.py). A small upload's one batch is
    built here: there is nothing to overlap, and the trip to the thread costs more than
    building it (about 40 µs an element: the event loop waits a few ms at most)."""
    if len(index) <= min(size, INLINE_BATCH):
        for chunk in _batches(file, size):
            yield _build_batch(chunk, index, version_id)
        return
    lines = iter(_batches(file, size))

    def build_next() -> asyncio.Task[Batch] | None:
        chunk = next(lines, None)
        if chunk is None:
            return None
        return asyncio.ensure_future(
            anyio.to_thread.run_sync(_build_batch, chunk, index, version_id, abandon_on_cancel=True)
        )

    task = build_next()
    try:
        while task is not None:
            batch = await task
            task = build_next()
            yield batch
    finally:
        if task is not None:
            task.cancel()


async def create_version(
    session: AsyncSession,
    user_id: uuid.UUID | None,
    model: Model,
    documents: AsyncIterator[tuple[str, dict[str, Any]]],
    source: SourceInfo,
    meta: UploadMeta,
) -> Version:
    await commit_early(session)  # no connection held while a slow client streams the body
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as file:
        spool = _Spool(file=file)
        await _spool(documents, meta, spool)
        if not spool.index:
            raise Unprocessable("The upload contains no elements.")
        target = _Target(model.id, model.project_id, user_id)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                version = await _write(session, target, spool, source, meta)
                break
            except DBAPIError as exc:
                # A deadlock or serialization failure rolled the transaction back whole:
                # write it again from the spool (payloads, the shared rows, commit on their
                # own and no longer deadlock: _batch_writer).
                if classify(exc) != "conflict" or attempt == WRITE_ATTEMPTS:
                    raise
                await session.rollback()
                log.warning("upload.write_retried", attempt=attempt, error=sqlstate(exc))
    if version.element_count >= ANALYZE_AFTER_ELEMENTS:
        await repository.refresh_statistics(session)
        await commit_early(session)  # the statistics hold, whoever owns the session
    return version


@dataclass(frozen=True)
class _Target:
    """What a version is written into (plain values: they survive a rollback)."""

    model_id: uuid.UUID
    project_id: uuid.UUID
    user_id: uuid.UUID | None


BatchWriter = Callable[[Batch], Awaitable[None]]


@contextlib.asynccontextmanager
async def _batch_writer(session: AsyncSession) -> AsyncIterator[BatchWriter]:
    """Writes a version's batches. On PostgreSQL each batch's payloads commit at once, on a
    connection of their own, and the next batch's payloads go in while this one's elements
    and relations do (two backends at work; the elements need their payloads committed).

    Payloads are content-addressed and never deleted, so one written by an upload that then
    fails is merely unused (the next upload of that content reuses it). Inside the version's
    transaction, overlapping uploads waited on each other's uncommitted payloads across
    batches and deadlocked; three attempts each were not always enough (503 in CI). Committed
    batch by batch, a writer holds its payload locks for one sorted statement only. SQLite
    has one writer: there everything stays in the version's transaction, in turn."""
    if session.get_bind().dialect.name != "postgresql":

        async def in_turn(batch: Batch) -> None:
            await repository.write_payloads(session, batch.payloads, batch.facts)
            await repository.write_members(session, batch.elements, batch.relations)

        yield in_turn
        return
    engine = session.bind
    assert isinstance(engine, AsyncEngine), "sessions are bound to the engine (kit/db.py)"
    members: asyncio.Task[None] | None = None
    async with engine.connect() as conn:

        async def overlapped(batch: Batch) -> None:
            nonlocal members
            async with conn.begin():
                await repository.write_payloads(conn, batch.payloads, batch.facts)
            if members is not None:
                await members
            members = asyncio.create_task(
                repository.write_members(session, batch.elements, batch.relations)
            )

        try:
            yield overlapped
            if members is not None:
                await members
        finally:
            if members is not None and not members.done():
                members.cancel()
                await asyncio.gather(members, return_exceptions=True)


async def _write(
    session: AsyncSession, target: _Target, spool: _Spool, source: SourceInfo, meta: UploadMeta
) -> Version:
    """Write the spooled documents as a ready version and commit, in one transaction."""
    version = Version(
        model_id=target.model_id,
        status="pending",
        message=meta.message,
        source_name=meta.source_name,
        source_format=meta.source_format,
        source_schema=meta.source_schema,
        source_sha256=source.sha256,
        source_bytes=source.size,
        source_key=meta.source_key,
        units=meta.units,
        created_by=target.user_id,
    )
    session.add(version)
    await session.flush()

    classes: Counter[str] = Counter()
    relation_count = stored = 0
    async with _batch_writer(session) as write:
        async for batch in _built_batches(spool.file, spool.index, version.id, meta.batch_size):
            await write(batch)
            classes.update(batch.classes)
            relation_count += len(batch.relations)
            stored += len(batch.elements)
            if meta.on_progress is not None:
                await meta.on_progress("store", stored, len(spool.index))

    await repository.lock_model(session, target.model_id)
    version.parent_id, version.seq = await repository.numbering(session, target.model_id)
    version.status = "ready"
    version.element_count = len(spool.index)
    version.stats = {"by_class": dict(sorted(classes.items())), "relations": relation_count}
    await events.publish(
        session,
        target.project_id,
        "version.created",
        {
            "version_id": str(version.id),
            "seq": version.seq,
            "parent_id": str(version.parent_id) if version.parent_id else None,
            "element_count": version.element_count,
            "source_format": version.source_format,
            "message": version.message,
        },
        model_id=target.model_id,
    )
    if meta.before_commit is not None:
        await meta.before_commit(session, version)
    # The version is its own transaction: it must be committed before it is retried (above)
    # or its statistics are refreshed (outside any transaction).
    await commit_early(session)
    return version


async def receive_upload(
    session: AsyncSession,
    settings: Settings,
    metrics: Metrics,
    model: Model,
    user_id: uuid.UUID,
    body: AsyncIterator[bytes],
    content_type: str | None,
    *,
    message: str | None,
    source_name: str | None,
) -> Version:
    """A JSON or NDJSON request body, streamed in, as a new version of ``model``."""
    source = SourceHasher(body)
    documents = iter_body(
        aiter(source),
        content_type,
        max_json_bytes=settings.max_json_body_bytes,
        max_ndjson_bytes=settings.max_ndjson_body_bytes,
        max_line_bytes=settings.max_line_bytes,
    )
    meta = UploadMeta(
        source_format="ndjson" if media_type(content_type) in NDJSON_TYPES else "json",
        message=message,
        source_name=source_name,
        batch_size=settings.upload_batch_size,
    )
    try:
        version = await create_version(session, user_id, model, documents, source, meta)
    except Exception:
        metrics.uploads.labels("failed").inc()
        raise
    metrics.uploads.labels("ready").inc()
    metrics.upload_elements.inc(version.element_count)
    return version


def stored_source(store: SourceStore, version: Version) -> str:
    """The store's key of the file a version was imported from; 404 for a version that was
    uploaded as elements (only file imports keep the original). Blocking (the store)."""
    key = version.source_key
    if key is None or version.source_sha256 is None or not store.exists(key):
        raise NotFound(
            f"Version {version.id} has no stored source file; only file imports "
            "(POST /v1/models/{model_id}/imports) keep the original."
        )
    return key


async def get_version(session: AsyncSession, version_id: uuid.UUID) -> Version:
    version = await session.get(Version, version_id)
    if version is None:
        raise NotFound(f"Version {version_id} does not exist.")
    return version


async def get_sibling(session: AsyncSession, version: Version, other_id: uuid.UUID) -> Version:
    """Another version of ``version``'s model. One of another model (or another project,
    which the caller may not be allowed to know of) is reported exactly like one that does
    not exist."""
    other = await session.get(Version, other_id)
    if other is None or other.model_id != version.model_id:
        raise NotFound(f"Version {other_id} is not a version of this model.")
    return other


async def list_versions(
    session: AsyncSession, model: Model, cursor: str | None, limit: int
) -> tuple[list[Version], str | None]:
    before = decode_time_id_cursor(cursor)
    rows = await repository.list_versions(session, model.id, before, limit + 1)
    return page_of(rows, limit, time_id_key)


# ---- element reads ---------------------------------------------------------------------


async def get_element(
    session: AsyncSession, version: Version, global_id: str
) -> tuple[str, dict[str, Any]]:
    found = await repository.element(session, version.id, global_id)
    if found is None:
        raise NotFound(f"Version {version.id} has no element {global_id}.")
    return found
