"""Training on MXNet's own parameter server (ps-lite KVStore): the worker side of a
`dist_*` kvstore, and `launch`, which runs a scheduler, servers and workers on this host.

Worker side (`worker_from_env`, `WorkerContext`), what symbuilder decides:

* Sharding: every worker loads the whole file and makes the same seeded train/val split;
  each epoch, every worker draws the same seeded permutation of the training split and
  keeps rows `rank::num_workers` of it, padded cyclically so that every worker gets
  ceil(n / num_workers) rows and runs the same number of batches (dist_sync deadlocks
  otherwise). The union of the shards is the whole training split, every epoch.
* `train.batch_size` is per worker; the gradient of one update is summed over
  batch_size x num_workers samples, so rescale_grad is 1 / (batch_size x num_workers)
  for the *_sync kvstores (the servers sum the workers' gradients).
* dist_sync / dist_device_sync: the servers only sum gradients; every worker applies the
  same optimizer update to the same summed gradient (MXNET_UPDATE_ON_KVSTORE=0), so the
  workers' parameters are bit-identical, the optimizer state is local (rank 0 checkpoints
  it and a resume restores it), and the kvstore is free to average other arrays.
  dist_async: MXNet only supports updates on the servers, so the workers pull the final
  weights from the servers after training; running statistics, early stopping and
  --resume are refused there (no way to average or agree through an updating server).
* Statistics: `dataset` mode computes the exact statistics of the WHOLE training split on
  every worker (every worker reads the file anyway to make the split; the computation is
  deterministic, so every worker holds the same bits without any exchange and without a
  merge-order rounding question). `running` mode: MXNet never synchronises aux states,
  so at every epoch end the moving mean/var are summed through the kvstore under
  dedicated keys, divided by num_workers and written back into every worker's Module:
  checkpoints, validation and the export all see the same averaged statistics.
* Validation runs on every worker on the whole validation split (same parameters, same
  statistics, so the same figures); an early stop wanted by any worker stops all of them
  (a flag summed through the kvstore), so no worker is left waiting in a push.
* Only rank 0 writes checkpoints (dist_sync, dist_device_sync) and the export. A resume
  reads the run folder on every worker; the workers check that they all start after the
  same epoch (a host without the folder would otherwise run more epochs than the others).
* Failures: a failed worker leaves at once (os._exit), uncaught exceptions included: a
  normal exit would block in the kvstore's exit barrier. ps-lite detects no failure, so
  each worker watches the scheduler's port and ends itself when it is gone (a job
  started by hand); `launch` ends the whole job when any of its processes dies.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import RunError, UsageError, mxnet_message

DIST_KVSTORES = ("dist_sync", "dist_async", "dist_device_sync")
DMLC_VARS = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER",
             "DMLC_NUM_WORKER")
AUX_KEY = "__symbuilder_aux__:"
STOP_KEY = "__symbuilder_stop__"
START_KEY = "__symbuilder_start__"
# Seconds between a worker's checks that the scheduler still listens (0: no checks); a
# worker ends itself after three failed checks in a row.
WATCH_ENV = "SYMBUILDER_SCHEDULER_CHECK"
# Test hook: each worker saves its final parameters (and, in running mode, its own last
# moving statistics before averaging) into this folder.
DUMP_ENV = "SYMBUILDER_DIST_DUMP"


def is_dist(kvstore: str) -> bool:
    return kvstore in DIST_KVSTORES


def _is_sync(kvstore: str) -> bool:
    return "_sync" in kvstore


@dataclasses.dataclass
class WorkerContext:
    """One worker of a dist_* job: its kvstore, rank and the job's size."""
    kvstore: Any
    kind: str
    rank: int
    num_workers: int
    _aux_names: List[str] = dataclasses.field(default_factory=list)
    _stop_ready: bool = False
    _finished: bool = False
    say: Any = None  # progress lines

    @property
    def chief(self) -> bool:
        return self.rank == 0

    @property
    def sync(self) -> bool:
        return _is_sync(self.kind)

    @property
    def checkpoints(self) -> bool:
        """Whether this worker writes resumable checkpoints: rank 0 under *_sync only.
        Under dist_async the optimizer state lives on the servers, which MXNet cannot save
        (KVStore.save_optimizer_states asserts), and --resume is refused anyway."""
        return self.chief and self.sync

    @property
    def shard(self) -> Tuple[int, int]:
        return (self.rank, self.num_workers)

    def rows(self, n: int) -> int:
        """Training rows this worker sees per epoch (data.shard_order)."""
        from ..data.iterators import shard_rows  # lazy: the launcher never loads data
        return shard_rows(n, self.num_workers)

    @contextlib.contextmanager
    def optimizer_env(self) -> Iterator[None]:
        """Around Module.init_optimizer: in the *_sync modes the servers only sum gradients
        and every worker updates (MXNET_UPDATE_ON_KVSTORE=0, read by Module there).
        Module sets rescale_grad = 1 / (batch_size x num_workers) itself for *_sync
        kvstores, since the servers add the workers' gradients."""
        old = os.environ.get("MXNET_UPDATE_ON_KVSTORE")
        os.environ["MXNET_UPDATE_ON_KVSTORE"] = "0" if self.sync else "1"
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("MXNET_UPDATE_ON_KVSTORE", None)
            else:
                os.environ["MXNET_UPDATE_ON_KVSTORE"] = old

    def init_keys(self, module: Any, *, fixed: Sequence[str] = (), start_epoch: int = 0,
                  run_dir: Optional[str] = None) -> None:
        """Create symbuilder's own keys, after Module created the parameters' keys: one per
        aux state that changes (every BatchNorm's moving statistics but the `fixed` ones)
        and the stop flag. Collective: every worker calls it with the same names.

        Then check that every worker starts after the same epoch (`start_epoch`, 0 for a
        fresh run): a worker that found no checkpoint to resume while rank 0 did (its own
        host has no copy of the run folder) would run more epochs than the others and
        leave them waiting in a push forever. RunError on every worker if they differ."""
        import mxnet as mx
        _, aux = module.get_params()
        changing = sorted(k for k in aux if k not in set(fixed))
        if not self.sync:
            if changing and self.chief and self.say:
                shown = ", ".join(changing[:4]) + (", ..." if len(changing) > 4 else "")
                self.say(f"note: dist_async cannot average aux states over the workers (the "
                         f"servers apply every push as an optimizer update): {shown} will be "
                         "rank 0's own moving statistics, from its shard; dist_sync averages "
                         "them")
            return
        self._aux_names = changing
        for name in self._aux_names:
            self.kvstore.init(AUX_KEY + name, mx.nd.zeros(aux[name].shape, dtype="float32"))
        self.kvstore.init(STOP_KEY, mx.nd.zeros((1,), dtype="float32"))
        self.kvstore.init(START_KEY, mx.nd.zeros((2,), dtype="float64"))
        self._stop_ready = True
        # Sum of e and of e^2 over the workers: all equal iff sum(e^2) = sum(e)^2 / W.
        e = float(start_epoch)
        out = mx.nd.zeros((2,), dtype="float64")
        self.kvstore.push(START_KEY, mx.nd.array([e, e * e], dtype="float64"))
        self.kvstore.pull(START_KEY, out=out)
        total, squares = (float(v) for v in out.asnumpy())
        if squares * self.num_workers != total * total:
            mean = total / self.num_workers
            where = f" in {run_dir}" if run_dir else ""
            raise RunError(
                f"the workers do not start from the same checkpoint: worker {self.rank} "
                + (f"resumes after epoch {start_epoch}" if start_epoch else
                   "found no checkpoint to resume and starts at epoch 1")
                + f"{where}, the job's workers average epoch {mean:g}. --resume needs the run "
                "folder (rank 0 writes it beside --out) on a file system every worker "
                "reads, at the same path; or start over without --resume")

    def average_aux(self, module: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """Average the registered aux arrays over the workers and write the average back
        into the Module; returns (local aux before averaging, aux after)."""
        import mxnet as mx
        arg, aux = module.get_params()  # aux averaged over local devices
        if not self._aux_names:
            return aux, aux
        # Module.get_params() hands out its own NDArrays, which set_params below overwrites
        # in place: keep a copy of the local values.
        local = {k: v.copy() for k, v in aux.items()}
        averaged = dict(aux)
        for name in self._aux_names:
            out = mx.nd.zeros(aux[name].shape, dtype="float32")
            self.kvstore.push(AUX_KEY + name, aux[name])
            self.kvstore.pull(AUX_KEY + name, out=out)
            averaged[name] = out / self.num_workers
        module.set_params(arg, averaged, allow_missing=False, force_init=True)
        return local, averaged

    def any(self, flag: bool) -> bool:
        """True on every worker if any worker passed True (dist_sync: a summed flag)."""
        import mxnet as mx
        if not self._stop_ready:
            return flag
        out = mx.nd.zeros((1,), dtype="float32")
        self.kvstore.push(STOP_KEY, mx.nd.array([1.0 if flag else 0.0], dtype="float32"))
        self.kvstore.pull(STOP_KEY, out=out)
        return float(out.asnumpy()[0]) > 0

    def finish(self, module: Any) -> None:
        """At the end of the last epoch (before its validation, so that the last epoch's
        figures are those of the exported weights), and again after training (a no-op
        then): dist_async workers each hold the weights of their last pull; wait for
        every worker's last push, then pull the servers' final weights. Collective."""
        if self.sync or self._finished or not getattr(module, "_update_on_kvstore", False):
            return
        self._finished = True
        self.kvstore._barrier()
        group = module._exec_group
        for idx, name in enumerate(group.param_names):
            self.kvstore.pull(name, out=group.param_arrays[idx], priority=-idx)
        module._params_dirty = True

    def dump(self, arg: Dict[str, Any], aux: Dict[str, Any],
             local_aux: Optional[Dict[str, Any]] = None) -> None:
        """Test hook (SYMBUILDER_DIST_DUMP): this worker's final parameters."""
        folder = os.environ.get(DUMP_ENV)
        if not folder:
            return
        import mxnet as mx
        os.makedirs(folder, exist_ok=True)
        saved = {f"arg:{k}": v for k, v in arg.items()}
        saved.update({f"aux:{k}": v for k, v in aux.items()})
        mx.nd.save(os.path.join(folder, f"worker-{self.rank}.params"), saved)
        if local_aux is not None:
            mx.nd.save(os.path.join(folder, f"worker-{self.rank}-local-aux.params"),
                       dict(local_aux))


def check_env(spec: Any, *, resume: bool = False,
              environ: Optional[Dict[str, str]] = None) -> bool:
    """True if this process is a worker of a dist_* job (then `join` it after loading the
    data). A dist_* kvstore without the DMLC_* variables (or the variables with a non-dist
    kvstore) is a user mistake: one located line, exit 2."""
    env = os.environ if environ is None else environ
    kind = spec.train.kvstore
    role = env.get("DMLC_ROLE")
    if not is_dist(kind):
        if role:
            raise spec.error(("train", "kvstore"), f"DMLC_ROLE={role} is set (a distributed "
                             f"job), but train.kvstore is '{kind}'; use dist_sync, "
                             "dist_async or dist_device_sync, e.g. --set "
                             "train.kvstore=dist_sync")
        return False
    missing = [v for v in DMLC_VARS if not env.get(v)]
    if missing:
        raise spec.error(("train", "kvstore"), f"'{kind}' needs the parameter server's "
                         f"environment ({', '.join(missing)} not set): run "
                         "`symbuilder launch --workers N --servers M SPEC`, or set the "
                         "DMLC_* variables by hand (README, 'Distributed training')")
    if role != "worker":
        raise spec.error(("train", "kvstore"), f"DMLC_ROLE={role}: `symbuilder build` runs "
                         "the workers; a scheduler or server is `python -c 'import mxnet'` "
                         "with the same variables")
    if kind == "dist_async":
        running = [i for i, item in enumerate(spec.all_inputs)
                   if item.normalize is not None and item.normalize.stats == "running"]
        if running:
            raise spec.error(spec.input_path(running[0]) + ("normalize", "stats"), "stats: running needs "
                             "dist_sync: under dist_async the servers apply every push as an "
                             "update, so the workers' moving statistics cannot be averaged; "
                             "use stats: dataset or kvstore: dist_sync")
        if spec.train.early_stopping is not None:
            raise spec.error(("train", "early_stopping"), "early stopping needs dist_sync: "
                             "under dist_async the workers' parameters differ at every "
                             "epoch end, so they cannot agree when to stop")
        if resume:
            raise UsageError("--resume needs dist_sync: under dist_async the optimizer state "
                             "lives on the servers and is not checkpointed")
    return True


def check_launch(spec: Any, *, resume: bool = False) -> None:
    """Before `launch` starts any process: the mistakes each worker would report at its
    start (dist_async with running statistics, early stopping or --resume), once."""
    check_env(spec, resume=resume, environ=dict({v: "-" for v in DMLC_VARS}, DMLC_ROLE="worker"))


def join(spec: Any, *, progress: Any = None) -> WorkerContext:
    """Create the job's kvstore: connects to the scheduler and waits until every worker
    and server has registered."""
    env = os.environ
    kind = spec.train.kvstore
    import mxnet as mx
    watch = _SchedulerWatch.from_env(env, progress)
    try:
        kv = mx.kv.create(kind)
    except mx.base.MXNetError as e:
        raise RunError(f"could not join the parameter server at "
                       f"{env.get('DMLC_PS_ROOT_URI')}:{env.get('DMLC_PS_ROOT_PORT')}: "
                       f"{mxnet_message(e)}") from None
    worker = WorkerContext(kvstore=kv, kind=kind, rank=int(kv.rank),
                           num_workers=int(kv.num_workers), say=progress)
    _exit_on_uncaught_exception()
    if watch:
        watch.joined(worker.rank)
    if progress:
        progress(f"worker rank {worker.rank} of {worker.num_workers} ({kind}); "
                 + ("writes the checkpoints and the export" if worker.chief else
                    "rank 0 writes the checkpoints and the export"))
    return worker


def exit_failed_worker(code: int) -> None:
    """End a failed dist worker at once. A normal exit would run the kvstore's destructor,
    whose barrier waits for workers that are themselves waiting for this one's pushes."""
    if code != 0 and os.environ.get("DMLC_ROLE") == "worker":
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # pragma: no cover - a closed pipe
                pass
        os._exit(code)


class _SchedulerWatch:
    """A worker's daemon thread watching the scheduler's port (a TCP connect every
    `interval` seconds). ps-lite has no failure detection: when the scheduler dies, the
    workers of a job started by hand train on and then block forever in the kvstore's
    exit barrier (measured), and a worker whose DMLC_PS_ROOT_URI is wrong waits silently
    in its join. While joining, the thread says every 60 s (or 30 intervals, if shorter)
    what it is waiting for; once
    joined, three failed connects in a row end the worker with exit code 1 and a message.
    `symbuilder launch` needs none of this (it ends the job when any process dies), but
    it costs one connect per interval. ZeroMQ drops a connection that never greets it."""

    def __init__(self, host: str, port: int, interval: float, say: Any) -> None:
        self.host, self.port, self.interval, self.say = host, port, interval, say
        self.rank: Optional[int] = None
        self.started = time.monotonic()
        thread = threading.Thread(target=self._run, name="symbuilder-scheduler-watch",
                                  daemon=True)
        thread.start()

    @classmethod
    def from_env(cls, env: Any, say: Any) -> Optional["_SchedulerWatch"]:
        try:
            interval = float(env.get(WATCH_ENV, "2"))
            port = int(env.get("DMLC_PS_ROOT_PORT", ""))
        except ValueError:
            return None
        if not interval > 0:
            return None
        return cls(env.get("DMLC_PS_ROOT_URI", ""), port, interval, say or _say_stderr)

    def joined(self, rank: int) -> None:
        self.rank = rank

    def _alive(self) -> Tuple[bool, str]:
        try:
            with socket.create_connection((self.host, self.port),
                                          timeout=max(1.0, min(5.0, self.interval * 2))):
                return True, ""
        except OSError as e:
            return False, e.strerror or type(e).__name__

    def _run(self) -> None:
        every = min(60.0, 30 * self.interval)  # 60 s unless the checks are made faster
        missed, next_note = 0, every
        while True:
            time.sleep(self.interval)
            if self.rank is None:  # joining: the scheduler may legitimately start later
                waited = time.monotonic() - self.started
                if waited >= next_note:
                    next_note += every
                    workers, servers = (os.environ.get(v, "?") for v in
                                        ("DMLC_NUM_WORKER", "DMLC_NUM_SERVER"))
                    self.say(f"still joining after {waited:.0f} s: waiting for the scheduler "
                             f"at {self.host}:{self.port} and all {workers} workers and "
                             f"{servers} servers to register (check DMLC_PS_ROOT_URI, "
                             "DMLC_PS_ROOT_PORT and that every process was started)")
                continue
            alive, why = self._alive()
            missed = 0 if alive else missed + 1
            if missed >= 3:
                _say_stderr(f"symbuilder: failed: worker {self.rank}: the scheduler at "
                            f"{self.host}:{self.port} is gone ({why}); ending this worker, "
                            "the job cannot go on without it")
                os._exit(1)


def _say_stderr(line: str) -> None:
    try:
        sys.stdout.flush()
        print(line, file=sys.stderr, flush=True)
    except Exception:  # pragma: no cover - a closed pipe
        pass


def _exit_on_uncaught_exception() -> None:
    """Once a worker has joined, an uncaught exception (a bug, an AssertionError inside
    MXNet) must end the process too: a normal interpreter exit runs the kvstore's
    destructor, whose barrier waits forever for the other workers, which wait for this
    one. Print the traceback as usual, then leave at once with exit code 1."""
    previous = sys.excepthook
    if getattr(previous, "_symbuilder_dist", False):
        return

    def hook(kind: Any, value: Any, tb: Any) -> None:
        try:
            previous(kind, value, tb)
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # pragma: no cover - a closed pipe
                    pass
            os._exit(130 if issubclass(kind, KeyboardInterrupt) else 1)
    hook._symbuilder_dist = True  # type: ignore[attr-defined]
    sys.excepthook = hook


# --------------------------------------------------------------------------- launching

# Every process a launch starts carries this variable (value: a token unique to the
# launch), so a leftover process can be found by scanning /proc/*/environ.
LAUNCH_ENV = "SYMBUILDER_LAUNCH"
_PR_SET_PDEATHSIG = 1


class LaunchError(RunError):
    """A launched job failed: a process died, or the job ran out of time."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass
class _Proc:
    role: str
    index: int
    popen: subprocess.Popen
    reader: Optional[threading.Thread] = None
    tail: List[str] = dataclasses.field(default_factory=list)  # its last output lines

    @property
    def label(self) -> str:
        return self.role if self.role == "scheduler" else f"{self.role} {self.index}"


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """`count` distinct ports free on `host` now (held open together, then released),
    ascending."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return sorted(s.getsockname()[1] for s in socks)
    finally:
        for s in socks:
            s.close()


def _child_setup(parent: int) -> Any:
    """preexec_fn: die with the launcher (even on SIGKILL), and refuse to run if the
    launcher is already gone. The child also gets its own session (start_new_session),
    so a Ctrl-C reaches the launcher only, which then stops every process in order."""
    def setup() -> None:
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except Exception:  # pragma: no cover - not Linux: the launcher's cleanup still runs
            pass
        if os.getppid() != parent:
            os._exit(1)
    return setup


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # pragma: no cover
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def launch(build_args: Sequence[str], *, workers: int, servers: int = 1,
           timeout: Optional[float] = None, python: Optional[str] = None,
           out: Optional[IO[str]] = None, grace: float = 30.0,
           environ: Optional[Dict[str, str]] = None) -> None:
    """Run a dist job on this host: a scheduler, `servers` servers and `workers` workers
    (`python -m symbuilder build *build_args`), all on 127.0.0.1.

    Every output line is written to `out` prefixed with its process (`[worker 0] ...`).
    Worker i is kvstore rank i: ps-lite ranks the nodes of one host by port, and worker
    i gets the i-th lowest port (if another program took that port meanwhile, ps-lite
    picks another and a `[launch]` line tells the worker's rank; if it took the
    scheduler's, the job starts again on new ports, up to three times). Returns when every worker exited 0 (the scheduler and
    servers end by themselves then; after `grace` seconds they are stopped). Raises
    LaunchError, after stopping every other process, when any process dies (non-zero exit
    or a signal) or `timeout` seconds pass; on KeyboardInterrupt or SIGTERM everything is
    stopped too. Nothing outlives the launch: each process runs in its own session (its
    group is killed, grandchildren included) and gets SIGKILL if the launcher dies.
    """
    if workers < 1 or servers < 1:
        raise UsageError("launch needs at least one worker and one server")
    python = python or sys.executable
    base = _launch_environ(environ, servers=servers, workers=workers)
    emit = _emitter(out or sys.stdout)
    procs: List[_Proc] = []
    old_term = _sigterm_as_interrupt()
    started = time.monotonic()
    try:
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            root, plan = _plan(python, build_args, servers=servers, workers=workers)
            procs.clear()
            _start(plan, base, root, emit, procs)
            note = oversubscription_note(base, workers)
            if note and attempt == 1:
                emit("launch", note)
            if _supervise(procs, emit, started=started, timeout=timeout, grace=grace,
                          last_attempt=attempt == _BIND_ATTEMPTS):
                return
            _stop_and_join(procs)
            emit("launch", f"port {root} was taken before the scheduler could bind it; "
                 "starting the job again on other ports")
    finally:
        _stop_and_join(procs)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


_BIND_ATTEMPTS = 3
_Plan = List[Tuple[str, int, List[str], Optional[int]]]  # (role, index, command, port or None)


def _launch_environ(environ: Optional[Dict[str, str]], *, servers: int, workers: int) -> Dict[str, str]:
    """The environment every launched process shares (its role and ports come on top)."""
    base = dict(os.environ if environ is None else environ)
    base.update({"DMLC_PS_ROOT_URI": "127.0.0.1",
                 "DMLC_NUM_SERVER": str(servers), "DMLC_NUM_WORKER": str(workers),
                 "DMLC_NODE_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"})
    base.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
    base.pop("PORT", None)
    base[LAUNCH_ENV] = f"{os.getpid()}-{time.time_ns()}"
    return base


def _emitter(out: IO[str]) -> Callable[[str, str], None]:
    """emit(label, line): one prefixed line on `out`; a lock keeps the readers' lines whole."""
    lock = threading.Lock()

    def emit(label: str, line: str) -> None:
        with lock:
            try:
                out.write(f"[{label}] {line}\n")
                out.flush()
            except (BrokenPipeError, ValueError):  # pragma: no cover - reader went away
                pass
    return emit


def _pump(proc: _Proc, emit: Callable[[str, str], None]) -> None:
    """Reader thread: forward a process's lines, keep its tail, and say when a worker's
    kvstore rank is not its index."""
    for raw in iter(proc.popen.stdout.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        proc.tail.append(line)
        del proc.tail[:-20]
        emit(proc.label, line)
        ranked = _RANK_LINE.match(line) if proc.role == "worker" else None
        if ranked and int(ranked.group(1)) != proc.index:
            emit("launch", f"{proc.label} is kvstore rank {ranked.group(1)} (ps-lite "
                 "ranks by port, and its port was taken); its lines keep their label")
    proc.popen.stdout.close()


def _sigterm_as_interrupt() -> Any:
    """Turn SIGTERM into KeyboardInterrupt (so the same cleanup runs); the previous handler,
    or None off the main thread, where signal handlers cannot be set."""
    def on_sigterm(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt()

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, on_sigterm)


def _plan(python: str, build_args: Sequence[str], *, servers: int, workers: int) -> Tuple[int, _Plan]:
    """The scheduler's port and every process to start, on ports free now.

    Another program may take one before ps-lite binds it. A server's or worker's port
    taken: ps-lite binds a random one instead (only the rank order changes). The
    scheduler's: it dies ("bind failed"), and launch starts the whole job again on new
    ports, a few times."""
    ports = free_ports(1 + servers + workers)
    root, server_ports, worker_ports = ports[0], ports[1:1 + servers], ports[1 + servers:]
    plan: _Plan = [("scheduler", 0, [python, "-c", "import mxnet"], None)]
    plan += [("server", i, [python, "-c", "import mxnet"], p) for i, p in enumerate(server_ports)]
    plan += [("worker", i, [python, "-m", "symbuilder", "build", *build_args], p)
             for i, p in enumerate(worker_ports)]
    return root, plan


def _start(plan: _Plan, base: Dict[str, str], root: int, emit: Callable[[str, str], None],
           procs: List[_Proc]) -> None:
    """Start every process of `plan`, each with a reader thread, and say so. Each joins
    `procs` the moment it exists, so the caller's cleanup stops it even if a later start
    fails or is interrupted."""
    for role, index, cmd, port in plan:
        env = dict(base, DMLC_ROLE=role, DMLC_PS_ROOT_PORT=str(root))
        if port is not None:
            env["PORT"] = str(port)
        popen = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True,
                                 preexec_fn=_child_setup(os.getpid()))
        procs.append(_Proc(role, index, popen))
    for proc in procs:
        proc.reader = threading.Thread(target=_pump, args=(proc, emit), daemon=True)
        proc.reader.start()
    emit("launch", f"scheduler at 127.0.0.1:{root}; started " + ", ".join(
        f"{p.label} (pid {p.popen.pid})" for p in procs))


def _stop_and_join(procs: Sequence[_Proc]) -> None:
    _stop(procs)
    for proc in procs:
        if proc.reader is not None:
            proc.reader.join(timeout=5)


def oversubscription_note(environ: Dict[str, str], workers: int,
                          cores: Optional[int] = None) -> Optional[str]:
    """A warning when an explicit OMP_NUM_THREADS gives the workers more OpenMP threads
    than this host has cores. MXNet's OpenMP threads spin while they wait: measured on
    2 cores, 2 workers with OMP_NUM_THREADS=2 ran an epoch of the digits CNN 30-80x
    slower than with it unset or 1 (MXNet's own default is fine: launch leaves it)."""
    text = environ.get("OMP_NUM_THREADS", "")
    try:
        threads = int(text.split(",")[0])
    except ValueError:
        return None
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
    if threads * workers <= cores:
        return None
    return (f"note: OMP_NUM_THREADS={text} in each of the {workers} workers asks for "
            f"{threads * workers} OpenMP threads on {cores} core(s); MXNet's threads spin "
            "while they wait, which can slow every worker down many times: unset "
            f"OMP_NUM_THREADS or set it to {max(1, cores // workers)} or less")
_RANK_LINE = re.compile(r"worker rank (\d+) of \d+ \(")


def _supervise(procs: List[_Proc], emit: Any, *, started: float, timeout: Optional[float],
               grace: float, last_attempt: bool) -> bool:
    """Wait for the job: True when every worker exited 0; False when the scheduler could
    not bind its port (start again); LaunchError, after stopping the others, when any
    process died or the time ran out."""
    workers_done_at: Optional[float] = None
    while True:
        codes = [(p, p.popen.poll()) for p in procs]
        dead = next(((p, c) for p, c in codes if c is not None and c != 0), None)
        if dead:
            proc, code = dead
            if proc.role == "scheduler" and not last_attempt:
                proc.reader.join(timeout=5)  # its last lines: is it a bind failure?
                if any("bind failed" in line for line in proc.tail):
                    return False
            others = _stop(procs, exclude=proc)
            worker_mistake = proc.role == "worker" and code == 2
            raise LaunchError(
                f"{proc.label} (pid {proc.popen.pid}) {_describe_exit(code)}"
                + (" (a mistake in the spec, the data or the command line; see its "
                   "output above)" if worker_mistake else "")
                + (f"; stopped {others}" if others else ""),
                exit_code=2 if worker_mistake else 1)
        if all(c == 0 for p, c in codes if p.role == "worker"):
            if all(c is not None for _, c in codes):
                return True
            workers_done_at = workers_done_at or time.monotonic()
            if time.monotonic() - workers_done_at > grace:
                others = _stop(procs)
                emit("launch", f"the workers finished; stopped {others}, which did not "
                     f"end within {grace:g} s")
                return True
        if timeout is not None and time.monotonic() - started > timeout:
            others = _stop(procs)
            raise LaunchError(f"timed out after {timeout:g} s (--timeout); stopped {others}")
        time.sleep(0.05)


def _stop(procs: Sequence[_Proc], *, exclude: Optional[_Proc] = None,
          patience: float = 5.0) -> str:
    """Stop every process group still running: SIGTERM, then SIGKILL after `patience`
    seconds; reap them all. Returns which were running, for the message."""
    # Only groups whose leader is alive (not yet reaped): a reaped leader's pid, which is
    # the group's id, could belong to someone else's process by now.
    running = [p for p in procs if p.popen.poll() is None]
    for proc in running:
        _signal_group(proc.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + patience
    for proc in running:
        try:
            proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc.popen.pid, signal.SIGKILL)
    for proc in running:
        try:
            proc.popen.wait(timeout=patience)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
            pass
    running = [p for p in running if p is not exclude]
    if not running:
        return ""
    return "the other " + (f"{len(running)} processes" if len(running) > 1 else "process") \
        + " (" + ", ".join(p.label for p in running) + ")"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
