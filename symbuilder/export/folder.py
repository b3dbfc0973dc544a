"""The export folder: staged beside the target, its manifest with every file's hash, and
published whole.

An export is assembled in a temporary folder beside the target and swapped into place in
one step (renameat2 RENAME_EXCHANGE where the kernel has it), so a crash or Ctrl-C at any
moment leaves either the previous export or the new one, whole.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional

import numpy as np

from .. import __version__
from ..errors import ExportError
from ..files import fsync_path, fsync_tree, umask, write_atomic

MANIFEST = "manifest.json"
# What write_manifest always writes, with its type: how an export is told from a folder that
# merely holds a file called manifest.json.
_MANIFEST_KEYS = {"name": str, "files": dict, "spec": dict, "versions": dict}
_RENAME_EXCHANGE = 2


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_sha256(folder: str) -> str:
    """The sha256 of an export's manifest.json: printed by the build, pinned by
    `verify --manifest-sha256` (the manifest holds every other file's hash)."""
    return sha256_file(os.path.join(folder, MANIFEST))


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux renameat2). False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    res = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if res != 0:
        err = ctypes.get_errno()
        if err in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: filesystem or kernel lacks it
            return False
        raise OSError(err, os.strerror(err), b)
    return True


def export_problem(folder: str) -> Optional[str]:
    """Why a build may not replace `folder` (None when it may): only a missing folder, an
    empty one or a symbuilder export may go. A symbolic link counts as what it points to,
    and only a link to an export may go (the link is replaced; its target is left alone)."""
    if os.path.islink(folder):
        real = os.path.realpath(folder)
        if not os.path.isdir(real):
            return f"is a symbolic link to {real}, which is not a folder"
        problem = export_problem(real) or ("" if os.listdir(real) else "is empty")
        return f"is a symbolic link to {real}, which {problem}" if problem else None
    if not os.path.lexists(folder):
        return None
    if not os.path.isdir(folder):
        return "is a file, not a folder"
    try:
        entries = os.listdir(folder)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not entries:
        return None
    manifest = _read_export_manifest(folder)
    if manifest is None:
        what = ("its manifest.json is not a symbuilder manifest" if MANIFEST in entries
                else "it has no manifest.json")
        return f"is not a symbuilder export ({what}; it holds {some_names(entries)})"
    extra = set(_tree_files(folder)) - set(manifest["files"]) - {MANIFEST}
    if extra:
        return f"holds files its manifest.json does not list ({some_names(extra)})"
    return None


def some_names(names: Iterable[str], shown: int = 3) -> str:
    """The first few of `names`, sorted, for a one-line message."""
    names = sorted(names)
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _tree_files(folder: str) -> List[str]:
    """Every non-folder entry under `folder` ('/'-separated, relative), links included."""
    found = []
    for root, dirs, files in os.walk(folder):
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        for name in files + links:
            found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return found


def _read_export_manifest(folder: str) -> Optional[Dict[str, Any]]:
    """The folder's manifest if it is one that write_manifest wrote, else None: a random
    folder with a file called manifest.json must not pass for an export."""
    path = os.path.join(folder, MANIFEST)
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(manifest, dict) or not all(
            isinstance(manifest.get(key), kind) for key, kind in _MANIFEST_KEYS.items()):
        return None
    if not isinstance(manifest["versions"].get("symbuilder"), str):
        return None
    if not all(isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
               for entry in manifest["files"].values()):
        return None
    return manifest


def publish(staging: str, target: str) -> None:
    """Move the finished `staging` folder to `target`, replacing any previous export whole.
    What sits at `target` is checked again here (it may have changed during training): only
    an export, an empty folder or a link to an export is replaced."""
    target = os.path.abspath(target)
    problem = export_problem(target)
    if problem is not None:
        raise ExportError(f"{target} {problem}; not replacing it (the new export was not "
                          "published)")
    fsync_tree(staging)  # the rename must not reach the disk before the files it publishes
    if not os.path.lexists(target):
        os.rename(staging, target)
        fsync_path(os.path.dirname(target))  # the publishing rename itself
        return
    if not _exchange(staging, target):
        # Two renames: a crash between them leaves the previous export whole at `old`.
        old = staging + ".old"
        os.rename(target, old)
        os.rename(staging, target)
        staging = old
    fsync_path(os.path.dirname(target))
    _discard(staging)


def _discard(path: str) -> None:
    """Remove what publishing replaced: a folder, or a link (never what the link points to;
    rmtree refuses links and would leave it behind)."""
    if os.path.islink(path):
        os.unlink(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_staging(target: str) -> List[str]:
    """Remove staging folders of `target` left by a killed export; returns what it removed.

    A staging folder is `.<name>.tmp-<pid>-<random>` (staging_dir's naming, a real folder):
    it is stale when that process is gone (SIGKILL, power loss), so a live export of the same
    target is never touched, and anything else at a similar name is not symbuilder's and is
    left alone. One case is restored, not removed: `<staging>.old` is the previous export
    moved aside by the two-rename fallback of `publish`; when the kill came before the new
    export took its place (`target` missing), it goes back to `target`.
    """
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    staging_name = re.compile(re.escape(f".{os.path.basename(target)}.tmp-")
                              + r"(\d+)-[a-z0-9_]+(\.old)?$")
    removed = []
    try:
        names = sorted(os.listdir(parent))
    except FileNotFoundError:
        return removed
    for name in names:
        match = staging_name.match(name)
        path = os.path.join(parent, name)
        if not match or os.path.islink(path) or not os.path.isdir(path):
            continue
        if _alive(int(match.group(1))):
            continue
        if match.group(2) and not os.path.lexists(target):
            if export_problem(path) is None:
                os.rename(path, target)
            continue  # not a whole export: nobody's to restore, and not ours to remove
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def staging_dir(target: str) -> Iterator[str]:
    """A temporary folder beside `target`, removed unless it was published. Stale staging
    folders of earlier, killed exports to the same target are cleaned up first."""
    target = os.path.abspath(target)  # `model/` must stage as `.model.tmp-*`, not `..tmp-*`
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    clean_stale_staging(target)
    path = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-{os.getpid()}-",
                            dir=parent)
    os.chmod(path, 0o777 & ~umask())  # mkdtemp makes 0700; an export is an ordinary folder
    try:
        yield path
    finally:
        if os.path.exists(path):
            shutil.rmtree(path, ignore_errors=True)


def versions() -> Dict[str, str]:
    import mxnet  # lazy: only the manifest needs versions; export_problem runs without MXNet
    import onnx  # lazy: as mxnet above
    out = {"symbuilder": __version__, "python": platform.python_version(),
           "mxnet": mxnet.__version__, "numpy": np.__version__, "onnx": onnx.__version__}
    try:  # the installed distribution's version, without importing it (a checkpoint-only
        #   build does not use ONNX Runtime)
        out["onnxruntime"] = importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a declared dependency
        pass
    return out


def file_table(folder: str) -> Dict[str, Dict[str, Any]]:
    """sha256 and size of every file under `folder` (relative '/'-separated paths, subfolders
    such as triton/ included) except the manifest."""
    table = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if rel == MANIFEST or not os.path.isfile(path):
                continue
            table[rel] = {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}
    return dict(sorted(table.items()))


def write_manifest(folder: str, manifest: Mapping[str, Any]) -> None:
    manifest = dict(manifest)
    manifest["files"] = file_table(folder)
    text = json.dumps(manifest, indent=2, sort_keys=False, default=_json_default) + "\n"
    write_atomic(os.path.join(folder, MANIFEST), text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
