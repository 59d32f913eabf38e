"""Sealed backups: a backup directory as one tar file encrypted with age, to leave the host.

age (through pyrage, the Rust implementation's binding) because it is a small, reviewed,
authenticated streaming format: the archive is encrypted in 64 KiB chunks, each
authenticated, and the last chunk is marked, so a wrong key, a flipped bit or a truncated
object is refused, and memory stays at a chunk whatever the size. The key is an age
identity (``AGE-SECRET-KEY-1...``, from ``age-keygen`` or ``bem backup-key``);
``BEM_BACKUP_KEY`` may hold several, separated by whitespace or commas: the first seals new
archives, any of them opens old ones, which is how the key is rotated
(docs/runbooks/rotate-secrets.md).

Unsealing writes into a temporary file first and extracts only what decrypted whole, with
tarfile's ``data`` filter (no absolute paths, links out of the tree or device files), so a
refused archive leaves nothing behind.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

import pyrage
from pydantic import SecretStr
from pyrage import x25519


class SealError(Exception):
    """An archive that cannot be sealed or opened; the message says why."""


def identities(key: SecretStr | None) -> list[x25519.Identity]:
    if key is None or not key.get_secret_value().strip():
        raise SealError("off-site backups are encrypted: set BEM_BACKUP_KEY (bem backup keygen)")
    words = key.get_secret_value().replace(",", " ").split()
    try:
        return [x25519.Identity.from_str(word) for word in words]
    except pyrage.IdentityError as exc:
        raise SealError(f"BEM_BACKUP_KEY is not a list of age identities: {exc}") from None


def new_key() -> str:
    return str(x25519.Identity.generate())


def seal(directory: Path, archive: Path, key: SecretStr | None) -> None:
    """``directory`` as ``archive`` (tar, encrypted to the first identity of ``key``)."""
    recipient = identities(key)[0].to_public()
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".seal-") as work:
        plain = Path(work) / "backup.tar"
        with tarfile.open(plain, "w") as tar:
            tar.add(directory, arcname=".")
        with plain.open("rb") as source, archive.open("wb") as sealed:
            pyrage.encrypt_io(source, sealed, [recipient])


def unseal(archive: Path, into: Path, key: SecretStr | None) -> None:
    """Decrypt and unpack ``archive`` into the (new) directory ``into``; :class:`SealError`,
    and nothing written, when the key does not open it or it is not whole."""
    keys = identities(key)
    with tempfile.TemporaryDirectory(dir=into.parent, prefix=".unseal-") as work:
        plain = Path(work) / "backup.tar"
        try:
            with archive.open("rb") as sealed, plain.open("wb") as out:
                pyrage.decrypt_io(sealed, out, keys)
        except pyrage.DecryptError as exc:
            reason = "no key in BEM_BACKUP_KEY opens it" if "No matching keys" in str(exc) else exc
            raise SealError(f"{archive.name} cannot be decrypted: {reason}") from None
        except OSError as exc:  # age reports a bad or missing last chunk while streaming
            raise SealError(f"{archive.name} is truncated or was altered: {exc}") from None
        tree = Path(work) / "tree"
        try:
            with tarfile.open(plain) as tar:
                tar.extractall(tree, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise SealError(f"{archive.name} does not hold a backup: {exc}") from None
        tree.rename(into)
