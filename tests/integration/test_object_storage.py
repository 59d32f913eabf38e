"""Source files in an S3 bucket (``BEM_STORAGE_URL``), against a real S3 API on 127.0.0.1
(moto's server): kept once by content and verified on the way out, imported and downloaded
through the API with nothing on the local disk, backed up and restored, and an unreachable
store answering 503 with Retry-After while changing nothing. (moto does not check the
SHA-256 BEM sends with each upload, as S3 and MinIO do.)"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import boto3
import pytest

from bem.kit.errors import StorageUnavailable
from bem.kit.s3 import S3Store
from bem.kit.storage import CorruptSource, name_of
from bem.ops.backups import create_backup, restore_backup
from bem.testing import ifcgen
from tests.conftest import make_api, settings_for
from tests.helpers import free_port
from tests.integration.test_imports import ifc_bytes, imported, model_of, submit


def bucket_of(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix


def test_files_are_kept_once_by_content_and_verified(s3_url: str, tmp_path: Path) -> None:
    store = S3Store(s3_url)
    content = b"ISO-10303-21;\n" + bytes(range(256)) * 4096  # 1 MiB and a bit: several chunks
    key, size = store.put(io.BytesIO(content))
    assert (key, size) == (hashlib.sha256(content).hexdigest(), len(content))
    assert store.put(io.BytesIO(content)) == (key, size)
    bucket, prefix = bucket_of(s3_url)
    client = boto3.client("s3")
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"{prefix}/{name_of(key)}"]
    assert store.exists(key) and not store.exists("0" * 64)
    assert list(store.stored_keys()) == [key]
    store.download(key, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == content

    # A file changed behind BEM's back is refused on the way out, and leaves no copy.
    client.put_object(Bucket=bucket, Key=f"{prefix}/{name_of(key)}", Body=b"tampered")
    with pytest.raises(CorruptSource):
        store.download(key, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


async def test_imports_and_downloads_use_the_bucket_only(
    database_url: str, s3_url: str, tmp_path: Path
) -> None:
    local = tmp_path / "sources"
    settings = settings_for(database_url, storage_url=s3_url, storage_dir=local)
    content = ifc_bytes(ifcgen.generate(30))
    async with make_api(settings) as api:
        headers, mid = await model_of(api)
        job = await imported(api, headers, mid, "Tower ü.ifc", content)
        assert job["status"] == "succeeded", job
        url = f"/v1/versions/{job['version_id']}/source"
        r = await api.client.get(url, headers=headers)
        # Byte ranges from the bucket, as the local store's FileResponse serves them.
        parts = {
            span: await api.client.get(url, headers={**headers, "Range": span})
            for span in ("bytes=0-11", "bytes=100-", "bytes=-5", f"bytes={len(content)}-")
        }
    assert [p.status_code for p in parts.values()] == [206, 206, 206, 416]
    assert parts["bytes=0-11"].content == content[:12] == b"ISO-10303-21"
    assert parts["bytes=0-11"].headers["content-range"] == f"bytes 0-11/{len(content)}"
    assert parts["bytes=100-"].content == content[100:]
    assert parts["bytes=-5"].content == content[-5:]
    assert parts[f"bytes={len(content)}-"].headers["content-range"] == f"bytes */{len(content)}"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.status_code == 200
    assert r.content == content
    assert r.headers["content-length"] == str(len(content))
    assert r.headers["content-disposition"] == "attachment; filename*=utf-8''Tower%20%C3%BC.ifc"
    assert r.headers["etag"] == f'"{hashlib.sha256(content).hexdigest()}"'
    assert not local.exists() or not any(local.rglob("*"))
    assert S3Store(s3_url).exists(hashlib.sha256(content).hexdigest())


async def test_an_unreachable_store_is_a_503_and_changes_nothing(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    settings = settings_for(sqlite_url, storage_url="s3://nowhere/sources")
    async with make_api(settings) as api:
        headers, mid = await model_of(api)
        r = await submit(api, headers, mid, "m.ifc", ifc_bytes(ifcgen.generate(5)))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5"
        assert r.json()["type"] == "https://bem.dev/problems/storage-unavailable"
        assert await api.scalar("SELECT count(*) FROM jobs") == 0
    with pytest.raises(StorageUnavailable):
        S3Store("s3://nowhere/sources").exists("0" * 64)


async def test_backup_and_restore_carry_the_bucket_files(
    sqlite_url: str, s3_url: str, tmp_path: Path
) -> None:
    settings = settings_for(sqlite_url, storage_url=s3_url, backup_dir=tmp_path / "backups")
    content = ifc_bytes(ifcgen.generate(10))
    async with make_api(settings) as api:
        headers, mid = await model_of(api)
        assert (await imported(api, headers, mid, "a.ifc", content))["status"] == "succeeded"
    backup = Path(await create_backup(settings))
    key = hashlib.sha256(content).hexdigest()
    assert (backup / "sources" / name_of(key)).read_bytes() == content

    other_bucket = f"{bucket_of(s3_url)[0]}-restored"
    boto3.client("s3").create_bucket(Bucket=other_bucket)
    target = settings_for(
        f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}", storage_url=f"s3://{other_bucket}"
    )
    restored = await restore_backup(target, backup)
    assert restored.sources == 2  # the IFC file and its GLB
    assert S3Store(f"s3://{other_bucket}").exists(key)
