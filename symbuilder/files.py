"""The one way symbuilder writes a file: atomically, durably, with ordinary permissions.

`write_atomic` writes beside the target under a temporary name, fsyncs it, renames it over
the target in one step and fsyncs the folder, so a crash, a full disk or a writer that
raises midway leaves either the old file or the new one, whole, and never a stray temporary
file. Every writer uses it: the export folder's files, the ONNX file of `symbuilder export`,
`predict --out`, the run store's checkpoints and the data cache's index.

Inside `deferred_sync()` it skips its fsyncs: for files nobody may read before the caller
makes them durable together (an export's staging folder, flushed by one fsync_tree before it
is published; a checkpoint's files, flushed once before the state file that names them).
An fsync costs 1 to 5 ms on this machine's disk under load; a build wrote 53 of them.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from typing import Callable, Iterator, Union

# bytes, or a function that writes the file at the path it is given (mx.nd.save, symbol.save)
Content = Union[bytes, bytearray, Callable[[str], None]]


_DEFERRED: "contextvars.ContextVar[bool]" = contextvars.ContextVar("symbuilder_deferred_sync",
                                                                   default=False)


@contextlib.contextmanager
def deferred_sync() -> Iterator[None]:
    """write_atomic without fsyncs inside the block: the caller flushes what it wrote
    (fsync_tree, or fsync_path of each file and their folder) before anything names it."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: str) -> None:
    """Flush a file or a folder (its entries: a rename) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str) -> None:
    """Flush every file under `folder`, and the folders themselves, to the disk."""
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                fsync_path(path)
        fsync_path(root)


# A file name may be 255 bytes; the temporary name adds a dot, ".tmp-" and 8 random letters.
_STEM_BYTES = 255 - 1 - 5 - 8


def _stem(name: str) -> str:
    """`name`, cut to what leaves the temporary name within the file system's limit."""
    return os.fsencode(name)[:_STEM_BYTES].decode("utf-8", errors="ignore")


def write_atomic(path: str, content: Content, *, overwrite: bool = True) -> None:
    """Replace `path` with `content` in one step; on any error (KeyboardInterrupt included)
    the previous file stays as it was and the temporary file is removed. The new file's mode
    is 0666 minus the umask, as open() would give it (mkstemp's 0600 would not).

    `overwrite=False`: publish only if nothing is at `path` (a hard link, which fails on an
    existing name where a rename would replace it): FileExistsError otherwise, even when
    another process creates the file meanwhile."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{_stem(os.path.basename(path))}.tmp-", dir=folder)
    try:
        if callable(content):
            os.close(fd)
            fd = -1
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                fd = -1  # the with block closes it
                f.write(content)
        os.chmod(tmp, 0o666 & ~umask())
        durable = not _DEFERRED.get()
        if durable:
            fsync_path(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        fsync_path(folder)  # the rename itself must reach the disk
