"""The whole build, one direction: spec -> Model -> static checks -> data -> statistics ->
training -> export folder -> verified.

`build` is what `symbuilder build` runs; library users call it (or the steps) directly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shlex
import stat
import sys
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import export, proof
from .data import SplitData, cache_dir_for, load_data
from .data.augment import check_augment_keys
from .data.sources import check_formats, source_format
from .defaults import DEFAULT_RANDOM_SAMPLES, DEFAULT_SEED
from .errors import ExportError, UsageError
from .export import folder as export_folder
from .graph import Model, build_model
from .graph.checks import check_static
from .graph.summary import layer_shapes
from .inputlayer import calibrate
from .serving import audit
from .spec.model import Spec
from .training import Progress, TrainResult, distributed, train, with_epochs
from .training.metrics import check_labels
from .training.runstore import RunStore, fingerprint_of, is_run_file, spec_fingerprint


@dataclasses.dataclass
class BuildResult:
    out_dir: str
    manifest: Dict[str, Any]
    result: Optional[TrainResult]  # None: --resume found the export already finished
    rank: int = 0  # a dist worker's rank; only rank 0 exports (manifest is {} elsewhere)


def default_out_dir(spec: Spec) -> str:
    return os.path.join("export", spec.name)


def check_out_dir(out_dir: str, spec: Optional[Spec] = None) -> None:
    """Refuse, as a usage error (exit 2) before any data is read, an --out a build could not
    or must not write: one it cannot create, anything but a missing or empty folder or a
    previous symbuilder export, a folder holding the spec, its data or the working
    directory, and foreign files at the names the build keeps beside the export."""
    _check_creatable(out_dir)
    problem = _holds_protected(out_dir, spec) if spec is not None else None
    if problem is not None:
        raise UsageError(f"the build would replace this with its export, and it {problem}; "
                         "choose another --out", file=out_dir)
    problem = export_folder.export_problem(os.path.abspath(out_dir))
    if problem is not None:
        raise UsageError(f"the build would replace this with its export, but it {problem} "
                         "(--out may name a new or empty folder, or a previous symbuilder "
                         "export); choose another --out, or remove it yourself if nothing in "
                         "it is needed", file=out_dir)
    for path, looks_ours, what in _companions(out_dir):
        problem = _foreign(path, looks_ours)
        if problem is not None:
            raise UsageError(f"{problem}, so it is not symbuilder's {what} for --out "
                             f"{out_dir}; move it away or choose another --out", file=path)


def _check_creatable(out_dir: str) -> None:
    """The export folder must be creatable beside where it goes: a usage error now, not an
    OSError after training. Probed by creating (and removing) a folder there, which is the
    only test that also holds for root and for read-only or virtual file systems."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError("--out names a file, not a folder; choose another --out (a new or "
                         "empty folder, or a previous symbuilder export)", file=out_dir)
    probe_in = os.path.dirname(os.path.abspath(out_dir))
    while not os.path.exists(probe_in):  # the nearest existing ancestor
        probe_in = os.path.dirname(probe_in)
    if not os.path.isdir(probe_in):
        raise UsageError("is a file, so --out cannot be created below it", file=probe_in)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".symbuilder-probe-", dir=probe_in))
    except OSError as e:
        raise UsageError(f"cannot create the output folder here: {e.strerror}",
                         file=probe_in) from None


def _protected_paths(spec: Spec) -> List[Tuple[str, str]]:
    """What no build may remove, with how to name it: the spec, its data, the working
    directory and the home folder (which is often empty in a container, so the export rule
    alone would let it go)."""
    found = [(os.getcwd(), "the working directory"),
             (os.path.expanduser("~"), "your home folder")]
    if os.path.exists(spec.source):
        found.append((spec.source, f"the spec {spec.source}"))
    for source in (spec.data.train, spec.data.val) if spec.data else ():
        if source is None:
            continue
        found.append((spec.resolve(source.path), f"the data file {source.path}"))
        if source_format(source) == "npy" and source.label:  # the label is a file too
            found.append((spec.resolve(source.label), f"the data file {source.label}"))
    return found


def _holds_protected(out_dir: str, spec: Spec) -> Optional[str]:
    """Why replacing `out_dir` would remove the spec, its data or the working directory."""
    real_out = os.path.realpath(out_dir)
    for path, what in _protected_paths(spec):
        real = os.path.realpath(path)
        if real == real_out:
            return f"is {what}"
        if os.path.commonpath([real_out, real]) == real_out:
            return f"holds {what}"
    return None


# A data cache holds only its two subfolders (a run folder's files are RunStore's to name).
_CACHE_ENTRIES = {"sources", "arrays"}


def _companions(out_dir: str) -> List[Tuple[str, Callable[[str, bool], bool], str]]:
    """The folders a build keeps beside the export, each with what may be in it."""
    return [(run_dir_for(out_dir),
             lambda name, is_dir: not is_dir and is_run_file(name), "run folder"),
            (cache_dir_for(out_dir), lambda name, is_dir: is_dir and name in _CACHE_ENTRIES,
             "data cache")]


def _foreign(path: str, looks_ours: Callable[[str, bool], bool]) -> Optional[str]:
    """Why the folder at `path` is not symbuilder's (None if it is, or if nothing is there)."""
    if not os.path.lexists(path):
        return None
    if os.path.islink(path):
        return "is a symbolic link"
    if not os.path.isdir(path):
        return "is not a folder"
    try:
        names = os.listdir(path)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    strange = [n for n in names if os.path.islink(os.path.join(path, n))
               or not looks_ours(n, os.path.isdir(os.path.join(path, n)))]
    return f"holds {export_folder.some_names(strange)}" if strange else None


def run_dir_for(out_dir: str) -> str:
    """Where resumable checkpoints live while a build trains: beside the export, hidden."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    return os.path.join(parent, f".{base}.run")


def lock_path_for(out_dir: str) -> str:
    """The lock file of a build writing `out_dir`: beside the export, hidden."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    return os.path.join(parent, f".{base}.lock")


_LOCK_MARK = "symbuilder-lock"


@contextlib.contextmanager
def out_lock(out_dir: str) -> Iterator[None]:
    """Hold the lock of `out_dir` (fcntl.flock on `.<name>.lock` beside it) for the block: a
    second build of the same folder is a usage error at once, naming the holder. The kernel
    drops the lock when its process dies, so a lock file left by a killed build blocks
    nobody. The folders made to hold the lock file are removed again if nothing else went
    into them."""
    path = lock_path_for(out_dir)
    made = _make_parents(os.path.dirname(path))
    try:
        fd = _acquire_lock(path, out_dir)
        try:
            yield
        finally:
            if fd is not None:
                _release_lock(fd, path)
    finally:
        for folder in made:  # deepest first
            try:
                os.rmdir(folder)
            except OSError:  # not empty: the export (or something else) is in it now
                break


def _make_parents(folder: str) -> List[str]:
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for made in reversed(missing):
        os.mkdir(made)
    return missing


def _acquire_lock(path: str, out_dir: str) -> Optional[int]:
    """The locked file's descriptor; None when the `launch` that started this dist worker
    holds it. Retried when the file was replaced or removed between open and flock."""
    while True:
        try:  # O_NONBLOCK: a FIFO at that name must not hang the open
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK, 0o644)
        except OSError as e:
            raise UsageError(f"cannot be opened as the lock file of --out {out_dir} "
                             f"({e.strerror}); move it away or choose another --out",
                             file=path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_lock(fd)
            os.close(fd)
            if holder.get("pid") == os.getppid() and os.environ.get("DMLC_ROLE") == "worker":
                return None  # our `launch` holds it for the whole job
            raise UsageError(f"another build is writing this folder ({_describe(holder)}); "
                             "wait for it to finish, or stop it", file=out_dir) from None
        if _same_file(fd, path):
            break
        os.close(fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode) or _read_lock(fd) is None:
        os.close(fd)
        raise UsageError(f"is not a symbuilder lock file, so --out {out_dir} cannot be "
                         "locked; move it away or choose another --out", file=path)
    record = {_LOCK_MARK: 1, "pid": os.getpid(), "command": _command_line(),
              "since": export_folder.now_iso()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    return fd


def _same_file(fd: int, path: str) -> bool:
    try:
        here = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _read_lock(fd: int) -> Optional[Dict[str, Any]]:
    """The holder record in a lock file ({} while it is being written or if empty), None if
    the file is not a symbuilder lock file."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8")
        record = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or (record and record.get(_LOCK_MARK) != 1):
        return None
    return record


def _describe(holder: Optional[Dict[str, Any]]) -> str:
    if not holder:
        return "its pid is not recorded yet"
    return f"pid {holder.get('pid')}: {holder.get('command')}, since {holder.get('since')}"


def _command_line() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv else "?"
    argv = ["symbuilder" if program == "__main__.py" else program] + sys.argv[1:]
    return " ".join(shlex.quote(arg) for arg in argv)


def _release_lock(fd: int, path: str) -> None:
    """Remove the lock file while still holding it, then let go: a build that opened it
    meanwhile sees that the path no longer names its file and starts over."""
    try:
        if _same_file(fd, path):
            os.unlink(path)
    finally:
        os.close(fd)


def export_model(spec: Spec, result: TrainResult, data: SplitData, out_dir: str) -> Dict[str, Any]:
    """Write the export folder for a trained result, prove it, publish it; returns the manifest.

    export -> proof, wired: the proof runs on the staged files, so nothing is published
    unless ONNX Runtime agrees with MXNet and the deploy symbol with the ONNX model."""
    dtypes = export.input_dtypes(spec)  # uint8 inputs: held-out and random samples as bytes
    held_out = {name: np.ascontiguousarray(array[: spec.export.verify.samples]
                                           .astype(dtypes[name], copy=False))
                for name, array in data.val.inputs.items()}

    def prove(staging: str, manifest: Dict[str, Any], model_bytes: Optional[bytes]) -> None:
        if model_bytes is not None:
            # Held-out samples plus random ones drawn over their per-feature range, ORT with
            # all optimisations and none, at batch 1 and as one batch.
            manifest["parity"] = proof.parity_or_fail(
                result.symbol, result.arg_params, result.aux_params, model_bytes,
                atol=spec.export.verify.atol, rtol=spec.export.verify.rtol,
                held_out=held_out, random_samples=DEFAULT_RANDOM_SAMPLES, seed=DEFAULT_SEED,
                dtypes=dtypes)
        problems = audit.check_deploy_symbol(staging, manifest)  # against the ONNX model
        if problems:
            raise ExportError("; ".join(problems))

    return export.export_model(spec, result, data, out_dir, prove=prove)


def validate(spec: Spec, *, check_data: bool = True) -> str:
    """Build the Model (shape inference included), run the static checks and (unless
    `check_data` is false) read the data files and check labels and shapes: everything a
    build checks before training. Returns a one-line summary."""
    model = _checked_model(spec)
    parts = [f"{len(spec.layers)} layers",
             f"{sum(r['params'] for r in layer_shapes(model)):,} parameters"]
    if check_data:
        data = _checked_data(model)
        parts.append(f"{len(data.train)} training and {len(data.val)} validation samples")
        if data.classes is not None:
            parts.append(f"{len(data.classes)} classes")
    return ", ".join(parts)


def _checked_model(spec: Spec) -> Model:
    """The Model, statically checked: before any data is read or any epoch is trained."""
    check_formats(spec)
    check_augment_keys(spec)  # the data stage's: whether a source is an image format
    model = build_model(spec)
    check_static(model)
    return model


def _checked_data(model: Model, cache_dir: Optional[str] = None) -> SplitData:
    """The data, with what needs the labels (f1 on 10 classes) checked before any epoch."""
    data = load_data(model.spec, num_outputs=model.num_outputs, cache_dir=cache_dir)
    check_labels(model.spec, data)
    return data


def build(spec: Spec, *, out_dir: Optional[str] = None, epochs: Optional[int] = None,
          progress: Optional[Progress] = None, verbose: bool = False, resume: bool = False,
          bar: Optional[bool] = None) -> BuildResult:
    """Load data, train, export and verify. Raises SpecError/DataError (user mistakes, before
    anything is written) or RunError (a failed run; the previous export stays whole).

    While training, checkpoints go to a hidden run folder beside the export
    (`export/.<name>.run/`); `resume=True` continues from its last complete checkpoint. The
    run folder is removed once the export is published.
    """
    say = progress or (lambda line: None)
    out_dir = out_dir or default_out_dir(spec)
    if epochs is not None:  # an --epochs override, checked before anything is read or written
        spec = with_epochs(spec, epochs)
    dist = distributed.check_env(spec, resume=resume)  # dist_* needs the DMLC_* variables
    check_out_dir(out_dir, spec)
    with contextlib.ExitStack() as held:
        if not dist:  # a dist worker learns its rank (whether it writes) only when it joins
            held.enter_context(out_lock(out_dir))
            finished = finished_export(out_dir, spec) if resume else None
            if finished is not None:
                say(f"{out_dir}: already built from this spec ({finished['epochs_trained']} "
                    "epochs); nothing to resume")
                return BuildResult(out_dir, finished, None)
        model = _checked_model(spec)  # the graph, built once for every stage below
        data = _checked_data(model, cache_dir_for(out_dir))  # large sources: beside the export
        worker = distributed.join(spec, progress=say) if dist else None
        if worker is not None and worker.chief:
            held.enter_context(out_lock(out_dir))
        return _train_and_export(model, data, out_dir, worker, say, progress=progress,
                                 verbose=verbose, resume=resume, bar=bar)


def finished_export(out_dir: str, spec: Spec) -> Optional[Dict[str, Any]]:
    """The manifest of a finished build of this spec in `out_dir`, or None: no run folder
    left, the manifest's spec has the spec's fingerprint, and it trained train.epochs (or
    stopped early). Anything unreadable is None: the build then runs as without it."""
    if RunStore(run_dir_for(out_dir), spec).exists():
        return None
    try:
        with open(os.path.join(out_dir, export_folder.MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("spec"), dict)):
        return None
    done = manifest.get("epochs_trained") == spec.train.epochs or \
        manifest.get("stopped_early") is True
    same = fingerprint_of(manifest["spec"]) == spec_fingerprint(spec)
    return manifest if done and same else None


def _train_and_export(model: Model, data: SplitData, out_dir: str, worker: Any, say: Progress,
                      *, progress: Optional[Progress], verbose: bool, resume: bool,
                      bar: Optional[bool]) -> BuildResult:
    spec = model.spec
    writes = worker is None or worker.chief
    run_dir = run_dir_for(out_dir)
    store = RunStore(run_dir, spec)
    if not resume:
        if writes and store.start_fresh():
            say(f"note: discarded the interrupted run in {run_dir} (use --resume to continue one)")
    elif store.exists():
        say(f"resuming from epoch {store.last_epoch()} in {run_dir}")
    elif writes:  # --resume with no complete checkpoint (or none at all): a fresh run
        store.start_fresh()
    stats = calibrate(model, data, say)  # the statistics stage: exact, training split only
    result = train(spec, data, model=model, stats=stats, progress=progress, verbose=verbose,
                   run_dir=run_dir, resume=resume, bar=bar, worker=worker)
    if not writes:
        return BuildResult(out_dir, {}, result, rank=worker.rank)
    manifest = export_model(spec, result, data, out_dir)
    store.remove()
    return BuildResult(out_dir, manifest, result)
