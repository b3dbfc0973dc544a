"""Distributed training on MXNet's parameter server (symbuilder.training.distributed).

The slow tests run real jobs through `symbuilder launch` on loopback (a scheduler, one
server, two workers) and compare against independent computations: numpy float64
statistics of the whole training split, each worker's own parameters (saved through the
SYMBUILDER_DIST_DUMP test hook), and a /proc scan for leftover processes.
"""
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from symbuilder.data import load_data
from symbuilder.data.iterators import shard_order, shard_rows
from symbuilder.training import distributed
from symbuilder.training.distributed import DUMP_ENV, LAUNCH_ENV, WATCH_ENV, check_env, free_ports
from symbuilder.errors import SpecError
from symbuilder.spec.load import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "specs", "breast_cancer_mlp.yaml")
CNN = os.path.join(ROOT, "specs", "digits_cnn.yaml")
DMLC = {"DMLC_ROLE": "worker", "DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": "9",
        "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": "2"}


# ----------------------------------------------------------------- fast: sharding, checks

@pytest.mark.parametrize("n,workers", [(455, 2), (455, 3), (33, 2), (5, 4), (1, 3), (64, 1)])
def test_shards_cover_every_row_with_equal_lengths(n, workers):
    order = np.random.RandomState(n).permutation(n)
    shards = [shard_order(order, r, workers) for r in range(workers)]
    per = -(-n // workers)
    assert shard_rows(n, workers) == per
    assert all(len(s) == per for s in shards)           # same batch count on every worker
    joined = np.concatenate(shards)
    assert set(joined.tolist()) == set(range(n))        # the union is the whole split
    assert len(joined) - n == per * workers - n < workers  # at most W-1 rows twice
    if workers > 1 and n >= workers:
        # disjoint apart from the padding repeats, and each follows the epoch's order
        assert len(set(shards[0].tolist()) & set(shards[1].tolist())) <= workers - 1
        assert shards[0].tolist() == [int(order[i % n]) for i in range(0, per * workers, workers)]


def test_dist_kvstore_without_dmlc_environment_is_a_located_mistake():
    spec = load_spec(MLP, overrides=["train.kvstore=dist_sync"])
    with pytest.raises(SpecError) as e:
        check_env(spec, environ={})
    # The value came from --set, so the error points at the option.
    assert e.value.path == "train.kvstore" and e.value.file == "--set train.kvstore=dist_sync"
    assert "symbuilder launch" in str(e.value) and "DMLC_PS_ROOT_URI" in str(e.value)
    assert check_env(spec, environ=DMLC) is True
    assert check_env(load_spec(MLP), environ={}) is False


def test_dmlc_environment_with_a_local_kvstore_is_a_mistake():
    with pytest.raises(SpecError, match="DMLC_ROLE=worker is set"):
        check_env(load_spec(MLP), environ=DMLC)


def test_dist_async_refuses_running_statistics():
    spec = load_spec(MLP, overrides=["train.kvstore=dist_async", "input.normalize.stats=running"])
    with pytest.raises(SpecError, match="stats: running needs dist_sync") as e:
        check_env(spec, environ=DMLC)
    assert e.value.path == "input.normalize.stats"


def _env(**extra):
    """The jobs' environment: conftest's OMP_NUM_THREADS=2 left out, as a launch warns
    (2 workers x 2 spinning OpenMP threads on a 2-core host ran 30x slower)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(extra)
    return env


def _cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "symbuilder", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env() if env is None else env)


def test_cli_build_with_dist_kvstore_outside_a_launch_exits_2_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMLC_")}
    run = _cli("build", MLP, "--set", "train.kvstore=dist_sync", "--out", str(tmp_path / "o"),
               env=env)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert lines[0].startswith("--set train.kvstore=dist_sync: train.kvstore: 'dist_sync' needs")
    assert not (tmp_path / "o").exists()


def test_cli_launch_with_a_local_kvstore_exits_2_before_starting_anything(tmp_path):
    run = _cli("launch", "--workers", "2", MLP, "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and run.stdout == ""
    assert "train.kvstore: launch runs a parameter-server job" in run.stderr
    assert "Traceback" not in run.stderr


def test_launch_warns_when_omp_threads_oversubscribe_the_host():
    from symbuilder.training.distributed import oversubscription_note
    note = oversubscription_note({"OMP_NUM_THREADS": "2"}, workers=2, cores=2)
    assert "OMP_NUM_THREADS=2 in each of the 2 workers asks for 4 OpenMP threads on 2 " \
        "core(s)" in note and "set it to 1 or less" in note
    assert oversubscription_note({"OMP_NUM_THREADS": "1"}, workers=2, cores=2) is None
    assert oversubscription_note({}, workers=8, cores=2) is None    # MXNet's default: fine
    assert oversubscription_note({"OMP_NUM_THREADS": "x"}, workers=8, cores=2) is None


def test_cli_launch_refuses_dist_async_mistakes_before_starting_anything(tmp_path):
    run = _cli("launch", "--workers", "2", MLP, "--set", "train.kvstore=dist_async",
               "--set", "input.normalize.stats=running", "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and run.stdout == ""       # no [launch] line: nothing started
    assert run.stderr.startswith("--set input.normalize.stats=running: input.normalize.stats: "
                                 "stats: running needs dist_sync")
    run = _cli("launch", "--workers", "2", MLP, "--set", "train.kvstore=dist_async",
               "--resume", "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and run.stdout == ""
    assert "--resume needs dist_sync" in run.stderr and "Traceback" not in run.stderr


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(5)
    assert len(set(ports)) == 5 and ports == sorted(ports)


# ------------------------------------------------------------------ slow: real jobs

def _launch(tmp_path, spec, *extra, dump=True, timeout=100):
    env = _env()
    if dump:
        env[DUMP_ENV] = str(tmp_path / "dump")
    out = tmp_path / "export"
    run = _cli("launch", "--workers", "2", "--servers", "1", "--timeout", str(timeout - 10),
               spec, "--out", str(out), *extra, env=env, timeout=timeout)
    return run, str(out)


def _load_params(path):
    import mxnet as mx
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.slow
def test_two_workers_dataset_mode_same_params_and_whole_split_statistics(tmp_path):
    # The digits CNN has a BatchNorm inside (bn2): its aux states are averaged too.
    run, out = _launch(tmp_path, CNN, "--set", "train.kvstore=dist_sync", "--epochs", "2")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    for rank in (0, 1):
        assert f"[worker {rank}] worker rank {rank} of 2 (dist_sync)" in run.stdout
        assert f"[worker {rank}] epoch 2/2" in run.stdout
    w0 = _load_params(tmp_path / "dump" / "worker-0.params")
    w1 = _load_params(tmp_path / "dump" / "worker-1.params")
    _assert_same(w0, w1)                                  # bit-identical arg and aux
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    exported = _load_params(os.path.join(out, f"digits_cnn-{manifest['epoch']:04d}.params"))
    _assert_same(exported, w0)                            # rank 0 exported what all held

    # Independent: numpy float64 over the WHOLE training split (per channel: all pixels).
    data = load_data(load_spec(CNN))
    x = data.train.features.astype(np.float64)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    report = manifest["input_normalization"]
    report = report.get("data", report)
    np.testing.assert_allclose(report["exact_mean"], mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(report["exact_var"], var, rtol=1e-12, atol=0)
    assert report["count"] == x.shape[0] * 64
    np.testing.assert_array_max_ulp(exported["aux:data_bn_moving_mean"]
                                    if "aux:data_bn_moving_mean" in exported else
                                    _aux(exported, "moving_mean"), mean.astype(np.float32), 1)
    np.testing.assert_array_max_ulp(_aux(exported, "moving_var"), var.astype(np.float32), 1)
    # ... and not a worker's shard: a shard's statistics differ.
    order = np.random.RandomState(42 * 1_000_003).permutation(len(x))
    shard = x[shard_order(order, 0, 2)]
    assert not np.allclose(shard.mean(axis=(0, 2, 3)), mean, rtol=1e-6, atol=0)
    # Only rank 0 wrote: one export, no run folder left behind.
    assert sorted(os.listdir(tmp_path)) == ["dump", "export"]


def _aux(params, suffix):
    """The input layer's aux state (its name is derived from the input's)."""
    from symbuilder.inputlayer import InputLayerNames
    names = InputLayerNames.for_input("data")
    return params["aux:" + getattr(names, suffix)]


@pytest.mark.slow
def test_two_workers_running_mode_average_their_moving_statistics(tmp_path):
    run, out = _launch(tmp_path, MLP, "--set", "train.kvstore=dist_sync",
                       "--set", "input.normalize.stats=running", "--epochs", "3")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    dump = tmp_path / "dump"
    w0, w1 = (_load_params(dump / f"worker-{r}.params") for r in (0, 1))
    l0, l1 = (_load_params(dump / f"worker-{r}-local-aux.params") for r in (0, 1))
    _assert_same(w0, w1)
    # Each worker's own moving statistics differed (different shards) ...
    assert not np.array_equal(l0[_aux_key("moving_mean")], l1[_aux_key("moving_mean")])
    # ... and every worker ended with their float32 average.
    for key in (_aux_key("moving_mean"), _aux_key("moving_var")):
        want = (l0[key].astype(np.float32) + l1[key].astype(np.float32)) / np.float32(2)
        np.testing.assert_allclose(w0["aux:" + key], want, rtol=1e-6, atol=0)
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    exported = _load_params(os.path.join(out, f"breast_cancer_mlp-{manifest['epoch']:04d}.params"))
    _assert_same(exported, w0)


def _aux_key(suffix):
    from symbuilder.inputlayer import InputLayerNames
    return getattr(InputLayerNames.for_input("data"), suffix)


def _launch_processes(launcher_pid):
    """Every live process carrying this launch's marker variable (a /proc scan)."""
    marker = f"{LAUNCH_ENV}={launcher_pid}-".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read():
                    with open(f"/proc/{entry}/stat") as s:
                        if s.read().rsplit(")", 1)[1].split()[0] != "Z":
                            found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_killing_a_worker_ends_the_job_with_a_clear_error_and_no_leftovers(tmp_path):
    env = _env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "symbuilder", "launch", "--workers", "2", "--timeout", "80",
         MLP, "--set", "train.kvstore=dist_sync", "--epochs", "2000",
         "--out", str(tmp_path / "export")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    try:
        victim, lines = None, []
        deadline = time.monotonic() + 80
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"worker 1 \(pid (\d+)\)", line)
            if m:
                victim = int(m.group(1))
            if re.match(r"\[worker 1\] epoch +2/", line):  # epoch numbers are right-aligned
                break
        assert victim, "".join(lines)
        assert len(_launch_processes(proc.pid)) == 4     # the scan sees the whole job
        os.kill(victim, signal.SIGKILL)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1
    message = err.strip().splitlines()[-1]
    assert message == (f"symbuilder: failed: worker 1 (pid {victim}) was killed by SIGKILL; "
                       "stopped the other 3 processes (scheduler, server 0, worker 0)")
    assert "Traceback" not in err
    assert _launch_processes(proc.pid) == []
    assert not (tmp_path / "export").exists()           # no export from a failed job


@pytest.mark.slow
@pytest.mark.parametrize("kvstore", ["device", "local"])
def test_two_devices_on_one_host_train_and_export(tmp_path, kvstore):
    import mxnet as mx
    from symbuilder.pipeline import build
    spec = load_spec(MLP, overrides=["train.context=[cpu(0), cpu(1)]",
                                     f"train.kvstore={kvstore}", "train.epochs=3"])
    captured = {}
    real_init = mx.mod.Module.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        captured.setdefault("contexts", self._context)
    mx.mod.Module.__init__ = spy
    try:
        result = build(spec, out_dir=str(tmp_path / "export"))
    finally:
        mx.mod.Module.__init__ = real_init
    assert captured["contexts"] == [mx.cpu(0), mx.cpu(1)]
    assert result.manifest["metrics"]["val"]["accuracy"] > 0.9
    assert result.manifest["parity"]["max_abs"] <= 1e-5
    assert os.path.exists(tmp_path / "export" / "breast_cancer_mlp.onnx")


# ------------------------------------------------- slow: failures a review found (issue 7)

def _job_line(stdout, label, pattern):
    return next((ln for ln in stdout.splitlines()
                 if ln.startswith(f"[{label}] ") and re.search(pattern, ln)), None)


@pytest.mark.slow
def test_dist_async_trains_and_exports_the_servers_final_weights(tmp_path):
    # Was: rank 0 crashed writing its first checkpoint (KVStore.save_optimizer_states
    # asserts under dist_async), and the last epoch's figures were of each worker's own
    # last pull, not of the exported (the servers' final) weights.
    run, out = _launch(tmp_path, MLP, "--set", "train.kvstore=dist_async", "--epochs", "3")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    w0 = _load_params(tmp_path / "dump" / "worker-0.params")
    w1 = _load_params(tmp_path / "dump" / "worker-1.params")
    _assert_same(w0, w1)                                  # both pulled the servers' weights
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    _assert_same(_load_params(os.path.join(out, "breast_cancer_mlp-0003.params")), w0)
    # Both workers validated the same (final) weights in the last epoch.
    val = [_job_line(run.stdout, f"worker {r}", r"epoch 3/3").split("val ")[1].split("lr=")[0]
           for r in (0, 1)]
    assert val[0] == val[1]
    assert manifest["metrics"]["val"]["accuracy"] == pytest.approx(
        float(re.search(r"accuracy=([\d.]+)", val[0]).group(1)), abs=5e-5)
    assert sorted(os.listdir(tmp_path)) == ["dump", "export"]  # no checkpoint folder


@pytest.mark.slow
def test_dist_async_says_that_hidden_batchnorm_statistics_are_rank_0s(tmp_path):
    # The servers of dist_async would apply a pushed aux state as a gradient: no averaging.
    run, out = _launch(tmp_path, CNN, "--set", "train.kvstore=dist_async", "--epochs", "2",
                       "--set", "export.formats=[checkpoint]")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert ("[worker 0] note: dist_async cannot average aux states over the workers (the "
            "servers apply every push as an optimizer update): bn2_moving_mean, "
            "bn2_moving_var will be rank 0's own") in run.stdout
    assert "[worker 1] note:" not in run.stdout
    w0, w1 = (_load_params(tmp_path / "dump" / f"worker-{r}.params") for r in (0, 1))
    args = [k for k in w0 if k.startswith("arg:")]
    _assert_same({k: w0[k] for k in args}, {k: w1[k] for k in args})
    assert not np.array_equal(w0["aux:bn2_moving_mean"], w1["aux:bn2_moving_mean"])
    _assert_same(_load_params(os.path.join(out, "digits_cnn-0002.params")), w0)


def test_dist_async_refuses_resume_and_early_stopping():
    spec = load_spec(MLP, overrides=["train.kvstore=dist_async"])
    with pytest.raises(SpecError, match="--resume needs dist_sync"):
        check_env(spec, resume=True, environ=DMLC)
    spec = load_spec(MLP, overrides=["train.kvstore=dist_async",
                                     "train.early_stopping={metric: accuracy, patience: 2}"])
    with pytest.raises(SpecError, match="early stopping needs dist_sync"):
        check_env(spec, environ=DMLC)


def _inject(tmp_path, code):
    """A PYTHONPATH whose sitecustomize runs `code` in every worker of a job."""
    folder = tmp_path / "inject"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import os\nif os.environ.get('DMLC_ROLE') == 'worker':\n"
        + "".join(f"    {line}\n" for line in code.strip().splitlines()))
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(folder), ROOT, env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_an_uncaught_exception_in_a_worker_ends_the_job_instead_of_hanging(tmp_path):
    # Was: the worker printed its traceback, then blocked forever in the kvstore's exit
    # barrier (the other worker waits for its pushes), so the launch never ended.
    env = _inject(tmp_path, """
from symbuilder.training import distributed
real = distributed.WorkerContext.any
def any(self, flag):
    if self.rank == 1:
        raise AssertionError('injected bug')
    return real(self, flag)
distributed.WorkerContext.any = any
""")
    started = time.monotonic()
    run = _cli("launch", "--workers", "2", "--timeout", "40", MLP, "--set",
               "train.kvstore=dist_sync", "--epochs", "50", "--out", str(tmp_path / "o"),
               env=env, timeout=60)
    assert time.monotonic() - started < 30, "the job waited for its --timeout"
    assert run.returncode == 1
    assert "[worker 1] AssertionError: injected bug" in run.stdout
    assert re.search(r"symbuilder: failed: worker 1 \(pid \d+\) exited with code 1; stopped "
                     r"the other 3 processes", run.stderr.strip().splitlines()[-1])
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_launch_starts_again_when_the_schedulers_port_is_taken(tmp_path, monkeypatch):
    # Was: the scheduler died on "bind failed" and the launch failed. The port is taken
    # between free_ports() and the scheduler's bind here on purpose.
    intruder = socket.socket()
    intruder.bind(("127.0.0.1", 0))
    intruder.listen()
    taken = intruder.getsockname()[1]
    real, calls = distributed.free_ports, []

    def ports(count, host="127.0.0.1"):
        calls.append(count)
        got = real(count, host)
        return [taken] + got[1:] if len(calls) == 1 else got
    monkeypatch.setattr(distributed, "free_ports", ports)
    out = io.StringIO()
    try:
        distributed.launch([MLP, "--set", "train.kvstore=dist_sync", "--epochs", "1",
                            "--quiet", "--out", str(tmp_path / "o")],
                           workers=2, timeout=60, out=out, environ=_env())
    finally:
        intruder.close()
    text = out.getvalue()
    assert len(calls) == 2, text
    assert f"[launch] port {taken} was taken before the scheduler could bind it" in text
    assert os.path.exists(tmp_path / "o" / "manifest.json")
    assert _launch_processes(os.getpid()) == []


def _by_hand(tmp_path, worker_argvs, extra_env=None, servers=1):
    """A job started as a user starts one by hand: the DMLC_* variables per process."""
    root = free_ports(1)[0]
    env = {k: v for k, v in _env().items() if not k.startswith("DMLC_")}
    env.update({"DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(root),
                "DMLC_NUM_SERVER": str(servers), "DMLC_NUM_WORKER": str(len(worker_argvs)),
                "PYTHONUNBUFFERED": "1", **(extra_env or {})})
    procs = {}

    def start(label, role, cmd):
        log = open(tmp_path / f"{label.replace(' ', '-')}.log", "w+")
        procs[label] = (subprocess.Popen(cmd, env=dict(env, DMLC_ROLE=role),
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True), log)
    start("scheduler", "scheduler", [sys.executable, "-c", "import mxnet"])
    for i in range(servers):
        start(f"server {i}", "server", [sys.executable, "-c", "import mxnet"])
    for i, argv in enumerate(worker_argvs):
        start(f"worker {i}", "worker", [sys.executable, "-m", "symbuilder", "build", *argv])
    return root, procs


def _output(procs, label):
    log = procs[label][1]
    log.flush()
    log.seek(0)
    return log.read()


def _end(procs):
    for popen, log in procs.values():
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        log.close()


def _wait_for(procs, label, pattern, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if re.search(pattern, _output(procs, label), re.M):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_workers_started_by_hand_end_when_the_scheduler_dies(tmp_path):
    # Was: they trained on, then blocked forever in the kvstore's exit barrier.
    argv = [MLP, "--set", "train.kvstore=dist_sync", "--epochs", "3000",
            "--out", str(tmp_path / "o")]
    root, procs = _by_hand(tmp_path, [argv, argv], {WATCH_ENV: "0.3"})
    try:
        assert _wait_for(procs, "worker 1", r"^epoch +2/", 40), _output(procs, "worker 1")
        procs["scheduler"][0].kill()
        for label in ("worker 0", "worker 1"):
            popen = procs[label][0]
            assert popen.wait(timeout=15) == 1
            assert (f"the scheduler at 127.0.0.1:{root} is gone (Connection refused); "
                    "ending this worker") in _output(procs, label)
    finally:
        _end(procs)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_worker_waiting_for_a_missing_scheduler_says_so(tmp_path):
    # A by-hand job whose scheduler is not (yet) there: ps-lite waits silently forever.
    root = free_ports(1)[0]
    env = _env(DMLC_ROLE="worker", DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(root),
               DMLC_NUM_SERVER="1", DMLC_NUM_WORKER="2", PYTHONUNBUFFERED="1",
               **{WATCH_ENV: "0.1"})
    log = open(tmp_path / "worker.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "symbuilder", "build", MLP, "--set",
                             "train.kvstore=dist_sync", "--out", str(tmp_path / "o")],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    procs = {"worker": (proc, log)}
    try:
        assert _wait_for(procs, "worker", r"^still joining after \d+ s: waiting for the "
                         rf"scheduler at 127\.0\.0\.1:{root} and all 2 workers and 1 servers "
                         r"to register \(check DMLC_PS_ROOT_URI", 30), _output(procs, "worker")
        assert proc.poll() is None                        # a note, not a failure
    finally:
        _end(procs)


def _free_low_port():
    """A free port below ps-lite's random range (10000-50000)."""
    for port in range(9999, 5000, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 10000")


@pytest.mark.slow
def test_launch_tells_a_workers_rank_when_its_port_was_taken(tmp_path, monkeypatch):
    # Worker 0's port is taken: ps-lite binds a random one (>= 10000) instead, so worker 1
    # (port < 10000 here) becomes rank 0. The labels stay; a [launch] line says so.
    intruder = socket.socket()
    intruder.bind(("127.0.0.1", 0))
    intruder.listen()
    low, real = _free_low_port(), distributed.free_ports

    def ports(count, host="127.0.0.1"):
        root, server = real(2, host)
        return [root, server, intruder.getsockname()[1], low]
    monkeypatch.setattr(distributed, "free_ports", ports)
    out = io.StringIO()
    try:
        distributed.launch([MLP, "--set", "train.kvstore=dist_sync", "--epochs", "1",
                            "--set", "export.formats=[checkpoint]",
                            "--out", str(tmp_path / "o")],
                           workers=2, timeout=60, out=out, environ=_env())
    finally:
        intruder.close()
    text = out.getvalue()
    assert "[worker 0] worker rank 1 of 2" in text and "[worker 1] worker rank 0 of 2" in text
    assert "[launch] worker 0 is kvstore rank 1 (ps-lite ranks by port, and its port was " \
        "taken); its lines keep their label" in text
    assert "[launch] worker 1 is kvstore rank 0" in text
    assert "[worker 1] " + str(tmp_path / "o") + ": val accuracy=" in text  # rank 0 exported


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """The run folder of a 2-worker dist_sync launch stopped (SIGTERM) while it trains epoch 2 or a
    little later, and the epoch of its last checkpoint."""
    folder = tmp_path_factory.mktemp("interrupted")
    proc = subprocess.Popen(
        [sys.executable, "-m", "symbuilder", "launch", "--workers", "2", "--timeout", "60",
         MLP, "--set", "train.kvstore=dist_sync", "--epochs", "20",
         "--out", str(folder / "export")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=_env())
    try:
        for line in proc.stdout:
            if re.match(r"\[worker 0\] epoch +2/", line):
                proc.send_signal(signal.SIGTERM)
                break
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    run_dir = folder / ".export.run"
    state = json.load(open(run_dir / "state.json"))
    assert 1 <= state["epoch"] < 20 and not (folder / "export").exists()
    return run_dir, state["epoch"]


@pytest.mark.slow
def test_resume_in_a_launch_repeats_the_uninterrupted_run_bit_for_bit(tmp_path, interrupted_run):
    run_dir, epoch = interrupted_run
    shutil.copytree(run_dir, tmp_path / "resumed" / ".export.run")
    os.makedirs(tmp_path / "whole")
    resumed, _ = _launch(tmp_path / "resumed", MLP, "--set", "train.kvstore=dist_sync",
                         "--epochs", "20", "--resume", "--set", "export.formats=[checkpoint]")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr
    for rank in (0, 1):
        assert f"[worker {rank}] resuming from epoch {epoch} in" in resumed.stdout
    whole, _ = _launch(tmp_path / "whole", MLP, "--set", "train.kvstore=dist_sync",
                       "--epochs", "20", "--quiet", "--set", "export.formats=[checkpoint]")
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr
    for rank in (0, 1):
        _assert_same(_load_params(tmp_path / "resumed" / "dump" / f"worker-{rank}.params"),
                     _load_params(tmp_path / "whole" / "dump" / f"worker-{rank}.params"))


@pytest.mark.slow
def test_workers_resuming_from_different_checkpoints_fail_clearly(tmp_path, interrupted_run):
    # Several hosts without a shared run folder: rank 0 finds the checkpoint, the other
    # worker does not. Was: the second ran more epochs and the first waited forever.
    run_dir, epoch = interrupted_run
    shutil.copytree(run_dir, tmp_path / "host0" / ".export.run")
    argv = [MLP, "--set", "train.kvstore=dist_sync", "--epochs", "20", "--resume"]
    _, procs = _by_hand(tmp_path, [argv + ["--out", str(tmp_path / "host0" / "export")],
                                   argv + ["--out", str(tmp_path / "host1" / "export")]])
    try:
        for label in ("worker 0", "worker 1"):
            assert procs[label][0].wait(timeout=40) == 1, _output(procs, label)
        out0, out1 = _output(procs, "worker 0"), _output(procs, "worker 1")
    finally:
        _end(procs)
    assert "the workers do not start from the same checkpoint" in out0
    assert f"resumes after epoch {epoch}" in out0 + out1
    assert "found no checkpoint to resume and starts at epoch 1" in out0 + out1
    assert "on a file system every worker reads" in out0
    assert "Traceback" not in out0 + out1


@pytest.mark.slow
def test_dist_device_sync_with_two_devices_per_worker_and_running_statistics(tmp_path):
    # 2 workers x [cpu(0), cpu(1)]: Module averages the moving statistics over a worker's
    # devices, the kvstore over the workers; every copy ends the same.
    run, out = _launch(tmp_path, MLP, "--set", "train.kvstore=dist_device_sync",
                       "--set", "train.context=[cpu(0), cpu(1)]",
                       "--set", "input.normalize.stats=running", "--epochs", "3",
                       "--set", "export.formats=[checkpoint]")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    w0, w1 = (_load_params(tmp_path / "dump" / f"worker-{r}.params") for r in (0, 1))
    l0, l1 = (_load_params(tmp_path / "dump" / f"worker-{r}-local-aux.params") for r in (0, 1))
    _assert_same(w0, w1)
    key = _aux_key("moving_mean")
    assert not np.array_equal(l0[key], l1[key])
    np.testing.assert_allclose(w0["aux:" + key], (l0[key] + l1[key]) / np.float32(2),
                               rtol=1e-6, atol=0)
    _assert_same(_load_params(os.path.join(out, "breast_cancer_mlp-0003.params")), w0)


@pytest.mark.slow
def test_three_devices_keep_the_dataset_statistics_exact(tmp_path):
    # Was: "the input layer's statistics changed during training": Module.get_params()
    # averages aux states over the devices, and (x + x + x) / 3 != x in float32.
    from symbuilder.pipeline import build
    spec = load_spec(MLP, overrides=["train.context=[cpu(0), cpu(1), cpu(2)]",
                                     "train.kvstore=device", "train.epochs=3"])
    result = build(spec, out_dir=str(tmp_path / "export"))
    data = load_data(spec)
    x = data.train.features.astype(np.float64)
    exported = _load_params(tmp_path / "export" / "breast_cancer_mlp-0003.params")
    assert np.array_equal(_aux(exported, "moving_mean"), x.mean(axis=0).astype(np.float32))
    assert np.array_equal(_aux(exported, "moving_var"), x.var(axis=0).astype(np.float32))
    assert result.manifest["parity"]["max_abs"] <= 1e-5
