"""Data integrity: files checked against their official MD5 once, the result remembered; errors that name the fix.

A data file is verified on first use: its MD5 (for the MNIST family, of the *uncompressed* IDX
content, the digests the datasets publish; for CIFAR-10, of the pickled batch file) is compared
with the official one. A match is remembered in a small stamp file under the cache folder
(``$XDG_CACHE_HOME/whylearn/verified`` or ``~/.cache/whylearn/verified``; data folders are often
read-only), keyed on the file's absolute path, size, modification time and inode, so a later run
skips the digest until the file changes. A mismatch raises :class:`ChecksumError` naming the
file, both digests and the two ways out: delete the file to download the official one again, or
``data.verify=false`` for a variant of the data set made on purpose.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class ChecksumError(ValueError):
    """A data file's MD5 differs from the official one (nothing was unpickled or trained on)."""


class CorruptDataError(ValueError):
    """A data file cannot be read (a truncated or damaged gzip, a wrong header); the message names the file."""


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/whylearn`` (or ``~/.cache/whylearn``): token caches and verification stamps."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whylearn"


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file's bytes, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _stamp_path(path: Path) -> Path:
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:24]
    return cache_root() / "verified" / f"{key}.json"


def is_verified(path: str | os.PathLike, expected_md5: str) -> bool:
    """True if ``path`` was verified against ``expected_md5`` and has not changed since (size, mtime, inode)."""
    path = Path(path)
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        return stamp == {**_identity(path), "md5": expected_md5}
    except (OSError, ValueError):
        return False


def remember_verified(path: str | os.PathLike, expected_md5: str) -> None:
    """Record that ``path`` (as it is now) has ``expected_md5``; silently skipped if the cache is not writable."""
    path = Path(path)
    stamp = _stamp_path(path)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**_identity(path), "md5": expected_md5}))
        tmp.replace(stamp)
    except OSError as e:  # a read-only home: verify again next time
        log.debug("could not write the verification stamp %s: %s", stamp, e)


def checksum_error(path: str | os.PathLike, got: str, expected: str, what: str, of: str = "") -> ChecksumError:
    """The error for a mismatch: the file, both digests, and how to fix it."""
    return ChecksumError(
        f"checksum mismatch for {path}: the MD5 of its {of or 'content'} is {got}, the official {what} file's is "
        f"{expected}. The file is corrupt or not the official one. Delete it and run again to download the "
        f"official file (checked the same way), or put the official file there; if it is your own variant of "
        f"{what} on purpose, set data.verify=false."
    )


def verify(path: str | os.PathLike, expected_md5: str, what: str, content: bytes | None = None,
           of: str = "") -> None:
    """Check ``path`` against ``expected_md5`` unless a stamp says it already passed; remember a pass.

    Args:
        path: the file (its identity keys the stamp).
        expected_md5: the official digest.
        what: the data set's name, for the message (e.g. ``"MNIST"``).
        content: the bytes to digest if not the file's own (the uncompressed content of a ``.gz``).
        of: what the digest is of, for the message (e.g. ``"uncompressed content"``).

    Raises:
        ChecksumError: the digest differs; the message names the file, both digests and the fix.
    """
    if is_verified(path, expected_md5):
        return
    got = hashlib.md5(content).hexdigest() if content is not None else md5sum(path)
    if got != expected_md5:
        raise checksum_error(path, got, expected_md5, what, of)
    remember_verified(path, expected_md5)
