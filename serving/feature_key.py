"""The feature key: the secret every word of a prompt is hashed with before it is a feature.

It comes from the ``feature_key`` setting (``ROUTEBANDIT_FEATURE_KEY``), else from
``<data_dir>/feature.key``, which the first start writes (64 random hex digits, mode
0600) and later starts read. The key is the setting's text, or the file's, as UTF-8
bytes: copying the file's content into ``ROUTEBANDIT_FEATURE_KEY`` gives the same key.

Processes that share a database must use one key, or their features would silently
disagree. The database keeps the key's fingerprint (:func:`bandit.features.key_fingerprint`,
never the key) in ``meta``; the first start stores it and a start with another key fails.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

from bandit.features import key_fingerprint
from feedback.store import Store
from serving.settings import Settings, SettingsError

log = logging.getLogger("routebandit")

KEY_FILE = "feature.key"
FINGERPRINT = "feature_key_fingerprint"
_SETTING = "setting 'feature_key' (ROUTEBANDIT_FEATURE_KEY)"


def load_feature_key(settings: Settings) -> bytes:
    """The configured key, else the data directory's key file (created on first use)."""
    if settings.feature_key is not None:
        return settings.feature_key.get_secret_value().strip().encode()
    path = settings.resolved_data_dir / KEY_FILE
    try:
        if not path.exists():
            _create(path)
        text = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise SettingsError(f"{_SETTING}: cannot read or create {path}: "
                            f"{exc.strerror or exc}") from exc
    if len(text) < 16:
        raise SettingsError(f"{_SETTING}: {path} holds no key (at least 16 characters); "
                            "delete it to have a new one made, or set the setting")
    if mode & 0o077:
        log.warning("the feature key file %s can be read by other users (mode %o); "
                    "chmod 600 it", path, mode & 0o777)
    return text.encode()


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: a process
    # starting at the same moment reads either no file or the whole key, and the
    # first link wins (os.link never replaces a file).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".feature.key.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    finally:
        os.unlink(tmp)


def check_feature_key(store: Store, key: bytes) -> None:
    """Store the key's fingerprint, or check it against the stored one.

    Raises :class:`~serving.settings.SettingsError` when the database was used with
    another key.
    """
    mine = key_fingerprint(key)
    stored = store.claim_meta(FINGERPRINT, mine)
    if stored != mine:
        raise SettingsError(
            f"{_SETTING}: this database was used with another feature key (fingerprint "
            f"{stored}, this process has {mine}), and features made with two keys "
            "silently disagree: set ROUTEBANDIT_FEATURE_KEY to the same value on every "
            "process (one that made its own <data_dir>/feature.key: copy that file's "
            "content)")


__all__ = ["FINGERPRINT", "KEY_FILE", "check_feature_key", "load_feature_key"]
