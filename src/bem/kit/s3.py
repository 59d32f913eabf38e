"""Source files in an S3-compatible bucket (``BEM_STORAGE_URL=s3://bucket/prefix``).

boto3, because it is the reference client: it reads the standard configuration
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
profiles, instance roles) so any S3-compatible store works, and it is synchronous like the
rest of the store (callers run it in a thread). Imported only when the setting is used.

Integrity both ways: a file is sent with its SHA-256 (``ChecksumSHA256``), which the store
checks before accepting it; a file read back is hashed as it streams and refused
(``CorruptSource``) if it no longer matches its key. Memory stays at one chunk: uploads
stream from the spooled file, downloads stream to a file or to the client. An unreachable
store, or one answering 5xx, is ``StorageUnavailable`` (503, Retry-After).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from starlette.responses import Response, StreamingResponse

from bem.kit.errors import StorageUnavailable
from bem.kit.storage import ABANDONED_AFTER_S, CHUNK, KEY, CorruptSource, digest_of, name_of

_MISSING = {"404", "NoSuchKey", "NotFound"}
# One range; several (or a malformed one) are ignored, as RFC 9110 allows: the whole file.
RANGE = re.compile(r"bytes=(\d+-\d*|-\d+)")


def client() -> Any:
    """A boto3 S3 client with bounded timeouts and retries, configured from the environment."""
    return boto3.client(
        "s3",
        region_name=os.environ.get("AWS_REGION"),
        config=Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )


def call(s3: Any, method: str, **kwargs: Any) -> Any:
    """A client call; outages become ``StorageUnavailable``, 4xx stay ``ClientError``."""
    try:
        return getattr(s3, method)(**kwargs)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500:
            raise StorageUnavailable() from exc
        raise
    except BotoCoreError as exc:  # could not connect, timed out, read failed
        raise StorageUnavailable() from exc


def split(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as (bucket, prefix without slashes at either end)."""
    parts = urlsplit(url)
    return parts.netloc, parts.path.strip("/")


class S3Store:
    def __init__(self, url: str) -> None:
        self.bucket, self.prefix = split(url)
        self.client = client()

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{name_of(key)}" if self.prefix else name_of(key)

    def _call(self, method: str, **kwargs: Any) -> Any:
        return call(self.client, method, Bucket=self.bucket, **kwargs)

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Key=self._name(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        return True

    def put(self, source: IO[bytes]) -> tuple[str, int]:
        key, size = digest_of(source)
        if not self.exists(key):  # same bytes, same key: kept once
            source.seek(0)
            self._call(
                "put_object",
                Key=self._name(key),
                Body=source,
                ContentLength=size,
                ChecksumSHA256=base64.b64encode(bytes.fromhex(key)).decode(),
            )
        return key, size

    def _open(self, key: str) -> tuple[Any, int]:
        """The object's body (a stream) and its length."""
        answer = self._call("get_object", Key=self._name(key))
        return answer["Body"], int(answer["ContentLength"])

    def _chunks(self, key: str, body: Any, *, whole: bool = True) -> Iterator[bytes]:
        """``body`` in chunks; a ``whole`` file is checked against the key at the end (a
        byte range cannot be)."""
        digest = hashlib.sha256()
        try:
            for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
                yield chunk
        except BotoCoreError as exc:
            raise StorageUnavailable() from exc
        finally:
            body.close()
        if whole and digest.hexdigest() != key:
            raise CorruptSource(f"{self._name(key)} does not hash to its key")

    def download(self, key: str, target: Path) -> None:
        try:
            body, _ = self._open(key)
            with target.open("wb") as out:
                for chunk in self._chunks(key, body):
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def local_file(self, key: str, workdir: Path) -> Path:
        target = workdir / key
        self.download(key, target)
        return target

    def stored_keys(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    *_, folder, name = item["Key"].split("/")
                    if KEY.fullmatch(name) and folder == name[:2]:
                        yield name
        except BotoCoreError as exc:
            raise StorageUnavailable() from exc

    def response(
        self,
        key: str,
        filename: str,
        media_type: str,
        headers: Mapping[str, str],
        byte_range: str | None = None,
    ) -> Response:
        sent = {**headers, "Accept-Ranges": "bytes", "Content-Disposition": _disposition(filename)}
        if byte_range is not None and RANGE.fullmatch(byte_range):
            return self._part(key, media_type, sent, byte_range)
        body, length = self._open(key)  # one GET: its answer carries the length
        return StreamingResponse(
            self._chunks(key, body),
            media_type=media_type,
            headers={**sent, "Content-Length": str(length)},
        )

    def _part(
        self, key: str, media_type: str, headers: dict[str, str], byte_range: str
    ) -> Response:
        """One byte range (RFC 9110), as S3 cuts it; 416 when it starts past the end."""
        try:
            answer = self._call("get_object", Key=self._name(key), Range=byte_range)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            size = self._call("head_object", Key=self._name(key))["ContentLength"]
            return Response(
                status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"}
            )
        return StreamingResponse(
            self._chunks(key, answer["Body"], whole=False),
            status_code=206,
            media_type=media_type,
            headers={
                **headers,
                "Content-Length": str(answer["ContentLength"]),
                "Content-Range": answer["ContentRange"],
            },
        )

    def sweep(self, older_than_s: float = ABANDONED_AFTER_S) -> int:
        """Abort multipart uploads that crashed writers left (BEM itself sends single PUTs;
        other tools writing under the prefix may not)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        listed = self._call("list_multipart_uploads", Prefix=self.prefix)
        stale = [u for u in listed.get("Uploads", []) if u["Initiated"] < cutoff]
        for upload in stale:
            self._call("abort_multipart_upload", Key=upload["Key"], UploadId=upload["UploadId"])
        return len(stale)


def _disposition(filename: str) -> str:
    """As Starlette's FileResponse says it: plain when ASCII, else RFC 5987 encoded."""
    if filename.isascii() and filename.isprintable() and '"' not in filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=utf-8''{quote(filename)}"
