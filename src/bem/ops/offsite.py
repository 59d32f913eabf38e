"""Backups in an S3-compatible bucket (``bem backup --to s3://bucket/prefix`` or
``BEM_BACKUP_URL``): one sealed archive (ops/archive.py) per backup, named
``<prefix>/<UTC timestamp>.bem.tar.age``. boto3's transfer manager sends it in parts
(bounded memory) with a SHA-256 per part that the store checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from bem.kit import s3
from bem.kit.errors import StorageUnavailable
from bem.ops.retention import moment_of

SUFFIX = ".bem.tar.age"


def is_offsite(location: str) -> bool:
    return location.startswith("s3://")


class OffsiteError(Exception):
    """The bucket refused or did not answer; the message says which."""


class Offsite:
    def __init__(self, url: str) -> None:
        self.bucket, self.prefix = s3.split(url)
        self.client = s3.client()

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}{SUFFIX}" if self.prefix else f"{name}{SUFFIX}"

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return s3.call(self.client, method, Bucket=self.bucket, **kwargs)
        except (StorageUnavailable, ClientError) as exc:
            raise OffsiteError(f"s3://{self.bucket}: {exc.__cause__ or exc}") from exc

    def names(self) -> list[str]:
        """The backups under the prefix, oldest first."""
        found: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"].rsplit("/", 1)[-1]
                    if name.endswith(SUFFIX) and _is_stamp(name.removesuffix(SUFFIX)):
                        found.append(name.removesuffix(SUFFIX))
        except (BotoCoreError, ClientError) as exc:
            raise OffsiteError(f"s3://{self.bucket} cannot be listed: {exc}") from exc
        return sorted(found)

    def upload(self, archive: Path, name: str) -> str:
        try:
            self.client.upload_file(
                str(archive), self.bucket, self.key(name), ExtraArgs={"ChecksumAlgorithm": "SHA256"}
            )
        except (S3UploadFailedError, BotoCoreError, ClientError) as exc:
            raise OffsiteError(f"the upload to s3://{self.bucket} failed: {exc}") from exc
        return self.url(name)

    def download(self, name: str, target: Path) -> None:
        try:
            self.client.download_file(self.bucket, self.key(name), str(target))
        except (BotoCoreError, ClientError) as exc:
            target.unlink(missing_ok=True)
            raise OffsiteError(f"{self.url(name)} cannot be read: {exc}") from exc

    def delete(self, names: list[str]) -> None:
        for name in names:
            self._call("delete_object", Key=self.key(name))


def _is_stamp(text: str) -> bool:
    try:
        moment_of(text)
    except ValueError:
        return False
    return True


def split_location(location: str) -> tuple[Offsite, str]:
    """``s3://bucket/prefix/<stamp>.bem.tar.age`` as its target and the backup's name."""
    head, _, file = location.rpartition("/")
    name = file.removesuffix(SUFFIX)
    if not file.endswith(SUFFIX) or not _is_stamp(name):
        raise OffsiteError(f"{location} does not name a backup (<prefix>/<timestamp>{SUFFIX})")
    return Offsite(head), name
