"""Export folders: checkpoint files, ONNX model, manifest with hashes; written atomically.

An export is assembled in a temporary folder beside the target and swapped into place in
one step (renameat2 RENAME_EXCHANGE where the kernel has it), so a crash or Ctrl-C at any
moment leaves either the previous export or the new one, whole.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Mapping

import numpy as np

from .errors import ExportError

MANIFEST = "manifest.json"
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


def publish(staging: str, target: str) -> None:
    """Move the finished `staging` folder to `target`, replacing any previous export whole."""
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ExportError(f"{target} exists and is not a folder; not replacing it")
    _fsync_tree(staging)  # the rename must not reach the disk before the files it publishes
    if not os.path.exists(target):
        os.rename(staging, target)
        return
    if not _exchange(staging, target):
        # Two renames: a crash between them leaves the previous export whole at `old`.
        old = staging + ".old"
        os.rename(target, old)
        os.rename(staging, target)
        staging = old
    shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_staging(target: str, *, max_age: float = 3600.0) -> List[str]:
    """Remove staging folders of `target` left by a killed export; returns what it removed.

    A staging folder is `.<name>.tmp-<pid>-<random>`: it is stale when that process is gone
    (SIGKILL, power loss), so a live export of the same target is never touched. Folders
    without a pid (older symbuilder) count as stale after `max_age` seconds. One case is
    restored, not removed: `<staging>.old` is the previous export moved aside by the two-rename
    fallback of `publish`; when the kill came before the new export took its place (`target`
    missing), it goes back to `target`.
    """
    parent = os.path.dirname(os.path.abspath(target)) or "."
    prefix = f".{os.path.basename(target)}.tmp-"
    removed = []
    try:
        names = sorted(os.listdir(parent))
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        path = os.path.join(parent, name)
        match = re.match(r"(\d+)-", name[len(prefix):])
        if match:
            if _alive(int(match.group(1))):
                continue
        else:
            try:
                if time.time() - os.lstat(path).st_mtime < max_age:
                    continue
            except FileNotFoundError:
                continue
        if name.endswith(".old") and not os.path.lexists(target):
            os.rename(path, target)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _fsync_tree(folder: str) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@contextlib.contextmanager
def staging_dir(target: str) -> Iterator[str]:
    """A temporary folder beside `target`, removed unless it was published. Stale staging
    folders of earlier, killed exports to the same target are cleaned up first."""
    parent = os.path.dirname(os.path.abspath(target)) or "."
    os.makedirs(parent, exist_ok=True)
    clean_stale_staging(target)
    path = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-{os.getpid()}-",
                            dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)  # mkdtemp makes 0700; an export is an ordinary folder
    try:
        yield path
    finally:
        if os.path.exists(path):
            shutil.rmtree(path, ignore_errors=True)


def versions() -> Dict[str, str]:
    import mxnet
    import onnx
    from . import __version__
    out = {"symbuilder": __version__, "python": platform.python_version(),
           "mxnet": mxnet.__version__, "numpy": np.__version__, "onnx": onnx.__version__}
    try:
        import onnxruntime
        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - a declared dependency
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
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def checkpoint_names(name: str, epoch: int) -> Dict[str, str]:
    return {"symbol": f"{name}-symbol.json", "params": f"{name}-{epoch:04d}.params"}


def save_checkpoint(folder: str, name: str, epoch: int, symbol: Any, arg_params: Mapping,
                    aux_params: Mapping) -> Dict[str, str]:
    """<name>-symbol.json and <name>-NNNN.params, exactly as Module.save_checkpoint writes."""
    import mxnet as mx
    mx.model.save_checkpoint(os.path.join(folder, name), epoch, symbol, dict(arg_params),
                             dict(aux_params))
    return checkpoint_names(name, epoch)


def to_numpy_params(arg_params: Mapping, aux_params: Mapping) -> Dict[str, np.ndarray]:
    merged = {}
    for params in (arg_params, aux_params):
        for key, value in params.items():
            merged[key] = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return merged


def export_onnx(folder: str, name: str, symbol: Any, arg_params: Mapping, aux_params: Mapping,
                input_shapes: Mapping[str, Any], *, opset: int, dynamic_batch: bool) -> str:
    from .onnx import to_onnx
    model = to_onnx(symbol, to_numpy_params(arg_params, aux_params), input_shapes,
                    opset=opset, dynamic_batch=dynamic_batch, model_name=name)
    import onnx
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError / InferenceError
        raise ExportError(f"the ONNX model fails onnx.checker: {str(e).splitlines()[0]}") from None
    path = os.path.join(folder, f"{name}.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def parity_or_fail(symbol: Any, arg_params: Mapping, aux_params: Mapping, onnx_path: str,
                   inputs: Mapping[str, np.ndarray], atol: float) -> Dict[str, Any]:
    """ONNX Runtime against MXNet; ExportError with the figures above atol."""
    from .verify import verify_parity
    with open(onnx_path, "rb") as f:
        model_bytes = f.read()
    report = verify_parity(symbol, arg_params, aux_params, model_bytes, inputs, atol=atol)
    figures = report.to_dict()
    if not report.passed:
        raise ExportError(f"ONNX Runtime disagrees with MXNet: max abs difference "
                          f"{report.max_abs:.3g} > atol {atol:g} (max rel {report.max_rel:.3g}) "
                          f"on {len(next(iter(inputs.values())))} held-out samples")
    return figures


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

