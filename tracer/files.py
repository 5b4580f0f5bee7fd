"""Output files: created private (mode 0600), whatever the umask.

Everything the tracer writes (recordings, Jaeger JSON, reports) can name
pods, images and command lines of the node, so no file it writes is
readable by other users.  A file that already exists with a wider mode is
narrowed to 0600 when it is a regular file (never a device such as
/dev/null, which a user may name as an output).
"""

from __future__ import annotations

import os
import stat
import tempfile

PRIVATE_MODE = 0o600


def create_private(path: str | os.PathLike) -> int:
    """Opens `path` for writing (created or truncated), mode 0600; returns the fd."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, PRIVATE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_private(path: str | os.PathLike, data: bytes) -> None:
    """Replaces `path` with `data` at once (a temporary file in the same
    directory, then a rename): mode 0600, and a reader never sees half a file.

    The temporary file is created exclusively (mkstemp), so a symlink planted
    at a predictable temporary name cannot redirect the write.
    """
    path = os.fspath(path)
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        # /dev/stdout, /dev/null, a FIFO: write through it, never replace it
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CLOEXEC), "wb") as f:
            f.write(data)
        return
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), PRIVATE_MODE)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
