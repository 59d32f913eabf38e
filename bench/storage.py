"""Memory of the S3 store (``kit/s3.py``) while it moves a large file: upload, download to a
file, and a streamed download as the API serves it, against moto's S3 server on 127.0.0.1.

Each operation runs in a fresh process so its peak RSS (``VmHWM``) is its own; the
baseline is the same process after importing boto3 and making the client. Prints JSON and
writes ``bench/results/storage.json``. Usage: ``python bench/storage.py [MiB]`` (default 256).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import write_report  # bench/ is on sys.path when run as a script

CHILD = """
import sys
from pathlib import Path
from bem.kit.s3 import S3Store
def hwm():  # peak RSS of this process image in KiB (ru_maxrss counts the parent's at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
store = S3Store(sys.argv[1])
key = sys.argv[3]
base = hwm()
if sys.argv[2] == "put":
    with open(sys.argv[4], "rb") as f:
        store.put(f)
elif sys.argv[2] == "download":
    store.download(key, Path(sys.argv[4]))
else:
    for _ in store._chunks(key, store._open(key)[0]):
        pass
peak = hwm()
print(base, peak)
"""


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    import hashlib

    import boto3
    from moto.server import ThreadedMotoServer

    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    port = spare_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
    }
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket="bench")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "source.bin"
        digest = hashlib.sha256()
        with source.open("wb") as out:
            for i in range(mib):
                chunk = os.urandom(1024 * 1024) if i == 0 else bytes([i % 256]) * (1024 * 1024)
                digest.update(chunk)
                out.write(chunk)
        key = digest.hexdigest()
        for operation in ("put", "download", "stream"):
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    "s3://bench/sources",
                    operation,
                    key,
                    str(source if operation == "put" else Path(work) / "copy.bin"),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            base, peak = (int(x) for x in done.stdout.split())
            results[operation] = {
                "seconds": round(time.perf_counter() - started, 2),
                "peak_rss_mib": round(peak / 1024, 1),
                "growth_mib": round((peak - base) / 1024, 1),
            }
    server.stop()
    write_report("storage", {"file_mib": mib, **results})


if __name__ == "__main__":
    main()
