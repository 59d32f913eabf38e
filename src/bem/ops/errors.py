"""Errors of backups and restores, importable without what makes backups (boto3, pyrage)."""


class BackupError(Exception):
    """A backup or restore that cannot be done or did not verify; the message says why."""
