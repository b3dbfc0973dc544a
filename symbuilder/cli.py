"""The `symbuilder` command: argument parsing -> library calls -> exit codes.

Exit codes: 0 ok; 1 a run that failed (with the figures); 2 a bad spec, bad data or bad
usage (one located line). No MXNet import here: library modules load it when needed.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import _thread
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional

from .defaults import DEFAULT_ATOL, DEFAULT_RANDOM_SAMPLES, DEFAULT_RTOL
from .errors import DataError, SymbuilderError, UsageError
from .files import write_atomic
from .heavyimport import SIGNALS, import_blocking_signals
from .defaults import SUPPORTED_OPSETS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2 (its default is 2 too,
    but with the whole usage text first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _load(args: argparse.Namespace):
    from .spec.load import load_spec  # lazy: per command
    return load_spec(args.spec, overrides=args.set or None)


def cmd_build(args: argparse.Namespace) -> int:
    from .pipeline import build  # lazy: per command
    spec = _load(args)
    progress = None if args.quiet else _say
    out = build(spec, out_dir=args.out, epochs=args.epochs, progress=progress,
                verbose=args.verbose, resume=args.resume, bar=False if args.quiet else None)
    if out.rank:  # a dist worker other than rank 0: rank 0 exports
        print(f"worker {out.rank}: trained {out.result.epochs_trained} epochs; rank 0 writes "
              f"{out.out_dir}")
        return EXIT_OK
    metrics = out.manifest["metrics"]["val"]
    parity = out.manifest.get("parity")
    figures = "  ".join(f"val {k}={v:.4f}" for k, v in metrics.items())
    if parity:
        figures += f"  onnx max|diff|={parity['max_abs']:.2g}"
    from .export.folder import manifest_sha256  # lazy: the CLI must not import MXNet
    # The manifest holds every other file's sha256: this one hash pins the whole export.
    print(f"{out.out_dir}: {figures}  manifest sha256={manifest_sha256(out.out_dir)}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from .pipeline import validate  # lazy: per command
    spec = _load(args)
    summary = validate(spec, check_data=not args.no_data)
    print(f"{args.spec}: ok ({summary})")
    return EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    from .graph.summary import summary_table  # lazy: per command
    spec = _load(args)
    print(summary_table(spec))
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json
    from .serving.evaluate import evaluate_export, report_text  # lazy: ONNX Runtime, MXNet
    report = evaluate_export(args.model, args.csv, out_dir=args.out,
                             manifest_sha256=args.manifest_sha256)
    print(json.dumps(report, indent=1) if args.json else report_text(report))
    if args.out:
        _say(f"{args.out}: evaluation.json and plots written")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from .scaffold import init_spec  # lazy: each command imports only what it uses
    spec_dir = os.path.dirname(os.path.abspath(args.out)) if args.out else None
    text = init_spec(args.csv, label=args.label, task=args.task, spec_dir=spec_dir)
    if not args.out:
        sys.stdout.write(text)
        return EXIT_OK
    _write_new(args.out, text.encode("utf-8"), "init")
    _say(f"{args.out}: written; next: symbuilder build {args.out}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from . import schema  # lazy: each command imports only what it uses
    if args.update_readme:  # a developer's command: the README's generated tables
        from .onnx.registry import readme_with_operators  # lazy: as above
        with open(args.update_readme) as f:
            text = f.read()
        with open(args.update_readme, "w") as f:
            f.write(readme_with_operators(schema.readme_with_reference(text)))
        return EXIT_OK
    sys.stdout.write(schema.markdown_reference() if args.markdown else schema.json_schema_text())
    return EXIT_OK


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, received {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, received {text!r}")
    return value


def cmd_export(args: argparse.Namespace) -> int:
    from .serving.legacy import export_checkpoint, parse_input, parse_input_range  # lazy: MXNet
    parsed = [parse_input(text) for text in args.input]
    shapes = {name: shape for name, shape, _ in parsed}
    dtypes = {name: dtype for name, _, dtype in parsed}
    ranges = {name: (low, high) for name, low, high in map(parse_input_range, args.input_range)}
    if args.random == 0 and not args.data:
        raise UsageError("--random 0 needs --data: the check needs samples to compare on")
    data = None
    if args.data:
        if len(shapes) != 1:
            raise UsageError("--data needs exactly one --input (it holds that input's samples)")
        from .serving.samples import load_samples  # lazy: numpy and the data sources
        data = {next(iter(shapes)): load_samples(args.data)}
    report = export_checkpoint(args.prefix, args.epoch, shapes, out=args.out, opset=args.opset,
                               atol=args.atol, rtol=args.rtol,
                               dynamic_batch=not args.fixed_batch, data=data,
                               random_samples=args.random, input_dtypes=dtypes,
                               input_ranges=ranges, deploy=args.deploy_symbol)
    print(_export_summary(report))
    print(_export_details(report))
    if report["deploy_symbol"]:
        print(f"{report['deploy_symbol']}: the label-free inference graph, computing what "
              f"{report['onnx']} computes (gluon.SymbolBlock.imports, or Module with "
              "label_names=None, with the same .params)")
    return EXIT_OK


def _export_summary(report: Dict[str, Any]) -> str:
    """The top line of `export`: how MXNet and ONNX Runtime were found to agree. max|diff| is
    over the deterministic outputs only, so when every output is random it would read 0 although
    no value was compared: say instead that they were compared by distribution."""
    parity = report["parity"]
    checked = " + ".join(f"{c['samples']} {k.replace('_', '-')}" for k, c in
                         parity["inputs"].items())
    random = [out["distribution"] for out in report["outputs"] if out.get("distribution")]
    if report["outputs"] and len(random) == len(report["outputs"]):
        tests = ", ".join(sorted(set(random)))
        agreement = (f"every output is random, compared by distribution ({tests}), "
                     "shape and dtype exactly")
    else:
        agreement = (f"max|diff|={parity['max_abs']:.2g} (atol {parity['atol']:g} + rtol "
                     f"{parity['rtol']:g} x scale), max rel={parity['max_rel']:.2g} of the "
                     "output's scale")
    return (f"{report['onnx']}: verified against MXNet: {agreement}; {checked} samples, "
            f"batch {' and '.join(map(str, parity['batches']))}, ORT all and no optimisations")


def _export_details(report: Dict[str, Any]) -> str:
    """Each input's dtype and where its random samples come from, then each output's figure."""
    lines = []
    for name, rng in report["sample_ranges"].items():
        dtype = report["input_dtypes"][name]
        where = rng["source"]
        if "low" in rng and where != "--data" and not isinstance(rng["low"], list):
            kind = "in" if dtype.startswith("float") else "integers in"
            note = ", --input-range to change" if where == "default" else ""
            where = f"{kind} [{rng['low']:g}, {rng['high']:g}] ({where}{note})"
        lines.append(f"  input {name} ({dtype}): random samples {where}")
    for out in report["outputs"]:
        if out.get("distribution"):  # a random draw: values cannot match, their law must
            lines.append(f"  output {out['name']}: random, compared by distribution "
                         f"({out['distribution']}), shape and dtype exactly")
            continue
        how = "exactly (integer)" if out["exact"] else "within tolerance"
        lines.append(f"  output {out['name']}: max|diff|={out['max_abs']:.2g}, compared {how}")
    return "\n".join(lines)


def _refuse_existing(path: str, command: str) -> None:
    """A command never overwrites a file it did not create: refuse `--out` if it exists."""
    if os.path.lexists(path):
        raise UsageError(f"already exists; {command} never overwrites a file (choose another "
                         "--out, or remove it yourself)", file=path)


def _write_new(path: str, data: Any, command: str) -> None:
    """`data` into `path`, atomically and only if nothing is there (even one created since
    `_refuse_existing` looked)."""
    try:
        write_atomic(path, data, overwrite=False)
    except FileExistsError:
        _refuse_existing(path, command)
        raise
    except OSError as e:
        raise UsageError(f"cannot be written: {e.strerror}", file=path) from None


def cmd_predict(args: argparse.Namespace) -> int:
    from .serving.predict import predict_blocks  # lazy: MXNet and ONNX Runtime
    if args.out:
        _refuse_existing(args.out, "predict")  # before any prediction is made
    # The export and the header are checked here, before anything is written.
    blocks = predict_blocks(args.model, args.csv, checkpoint=args.checkpoint,
                            manifest_sha256=args.manifest_sha256, keep=args.keep)
    if not args.out:
        _write_blocks(blocks, sys.stdout, args.csv[0])  # block by block: a long file streams
        return EXIT_OK
    counted: List[int] = []

    def write(path: str) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            counted.append(_write_blocks(blocks, f, args.csv[0]))
    _write_new(args.out, write, "predict")  # a temporary file, published when whole
    _say(f"{args.out}: {counted[0]} predictions")
    return EXIT_OK


def _write_blocks(blocks: Iterator[Any], stream: Any, csv_path: str) -> int:
    """Each block's rows, the header before the first; the rows written."""
    rows = 0
    for block in blocks:
        block.write_csv(stream, header=rows == 0)
        rows += len(block.values)
    if rows == 0:
        raise DataError("no data rows", file=csv_path)
    return rows


def _columns(text: str) -> List[str]:
    """--keep id,ts: column names, comma-separated, each named once."""
    names = [n.strip() for n in text.split(",")]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, each "
                                         f"once, received {text!r}")
    return names


def cmd_verify(args: argparse.Namespace) -> int:
    from .serving.audit import verify_export  # lazy: MXNet and ONNX Runtime
    report = verify_export(args.folder, data=args.data, manifest_sha256=args.manifest_sha256)
    if len(report["problems"]) == 1:  # one problem, one line
        print(f"symbuilder: failed: {args.folder}: {report['problems'][0]}", file=sys.stderr)
        return EXIT_FAILED
    for problem in report["problems"]:
        print(f"{args.folder}: {problem}", file=sys.stderr)
    if not report["passed"]:
        print(f"symbuilder: failed: {args.folder}: {len(report['problems'])} problem(s)",
              file=sys.stderr)
        return EXIT_FAILED
    figures = ""
    for model_file, p in (report["parity"] or {}).items():
        figures += (f"; {model_file} vs checkpoint max|diff|={p['max_abs']:.2g} "
                    f"(atol {p['atol']:g} + rtol {p['rtol']:g} x scale) on " + " + ".join(
                        f"{c['samples']} {k.replace('_', '-')}" for k, c in p["inputs"].items()))
    print(f"{args.folder}: ok ({len(report['files'])} files match the manifest{figures})")
    return EXIT_OK


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text.strip()):
        raise argparse.ArgumentTypeError(f"expected 64 hex digits (as the build printed), "
                                         f"received {text!r}")
    return text.strip().lower()


def _build_argv(args: argparse.Namespace) -> List[str]:
    """The `symbuilder build` arguments of a launch's workers."""
    argv = [args.spec]
    for key in args.set or []:
        argv += ["--set", key]
    if args.out:
        argv += ["--out", args.out]
    if args.epochs:
        argv += ["--epochs", str(args.epochs)]
    argv += [flag for flag, on in (("--resume", args.resume), ("--quiet", args.quiet),
                                   ("--verbose", args.verbose)) if on]
    return argv


def cmd_launch(args: argparse.Namespace) -> int:
    from .training.distributed import check_launch, is_dist, launch  # lazy: per command
    spec = _load(args)
    if not is_dist(spec.train.kvstore):
        raise spec.error(("train", "kvstore"), f"launch runs a parameter-server job, but "
                         f"train.kvstore is '{spec.train.kvstore}'; use dist_sync, dist_async "
                         "or dist_device_sync (e.g. --set train.kvstore=dist_sync)")
    check_launch(spec, resume=args.resume)  # before any process starts
    from .pipeline import check_out_dir, default_out_dir, out_lock  # lazy: per command
    out_dir = args.out or default_out_dir(spec)
    check_out_dir(out_dir, spec)
    with out_lock(out_dir):  # for the whole job: rank 0, our child, writes under it
        launch(_build_argv(args), workers=args.workers, servers=args.servers,
               timeout=args.timeout)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    import json
    from .bench import run_bench  # lazy: per command
    spec = _load(args)
    report = run_bench(spec, repeats=args.repeats, epochs=args.epochs,
                       inference_repeats=args.inference_repeats,
                       say=None if args.quiet else _say, gluon=not args.no_gluon,
                       torch=not args.no_torch)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.markdown())
    return EXIT_OK


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "launch": cmd_launch,
    "build": cmd_build, "validate": cmd_validate, "summary": cmd_summary, "schema": cmd_schema,
    "export": cmd_export, "predict": cmd_predict, "verify": cmd_verify,
    "bench": cmd_bench, "init": cmd_init, "evaluate": cmd_evaluate,
}


_Subparsers = Any  # argparse's subparsers action: its class is private to argparse


def _spec_command(sub: _Subparsers, name: str, help_text: str,
                  description: Optional[str] = None) -> argparse.ArgumentParser:
    """A subcommand whose first argument is a spec, with the --set overrides every such
    command takes."""
    p = sub.add_parser(name, help=help_text, description=description or help_text)
    p.add_argument("spec", metavar="SPEC", help="the YAML spec file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a spec value, e.g. --set train.epochs=5 "
                        "--set layers[0].num_hidden=32 (repeatable)")
    return p


def _build_options(p: argparse.ArgumentParser, resume_help: str) -> None:
    """The options build and launch share (launch passes them to each worker's build)."""
    p.add_argument("--out", metavar="DIR", help="export folder (default export/<name>)")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="override train.epochs")
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--quiet", "-q", action="store_true", help="no per-epoch progress")
    p.add_argument("--verbose", "-v", action="store_true", help="show MXNet's own logging")


def _add_build(sub: _Subparsers) -> None:
    p = _spec_command(sub, "build", "train the spec's network and export it to export/<name>/")
    _build_options(p, "continue an interrupted build from its last complete checkpoint "
                      "(export/.<name>.run/)")


def _add_launch(sub: _Subparsers) -> None:
    text = ("run a distributed build on this host: a scheduler, M parameter servers and N "
            "workers (each `symbuilder build SPEC ...`) on 127.0.0.1")
    p = _spec_command(sub, "launch", text, text + ". Every output line is prefixed with its "
                      "process; if any process dies, the others are stopped and the launch "
                      "fails. train.kvstore must be dist_sync, dist_async or dist_device_sync.")
    p.add_argument("--workers", type=_positive_int, required=True, metavar="N",
                   help="worker processes (worker i is kvstore rank i)")
    p.add_argument("--servers", type=_positive_int, default=1, metavar="M",
                   help="parameter-server processes (default 1)")
    p.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                   help="stop everything and fail after this long")
    _build_options(p, "continue an interrupted build")


def _add_validate(sub: _Subparsers) -> None:
    p = _spec_command(sub, "validate", "check everything that can be checked without training: "
                      "keys, ops, attributes, shapes, data files, label columns, ONNX support")
    p.add_argument("--no-data", action="store_true", help="do not read the data files")


def _add_summary(sub: _Subparsers) -> None:
    _spec_command(sub, "summary", "print the layers with output shapes, inputs (connected to) "
                  "and parameter counts: trainable, frozen, statistics (aux)")


def _add_evaluate(sub: _Subparsers) -> None:
    text = ("judge an export on a labelled CSV: the spec's metrics, a confusion matrix, "
            "per-class precision/recall/F1, macro and weighted averages and ROC AUC for a "
            "classifier; MAE, RMSE, R² and residuals for a regression")
    p = sub.add_parser("evaluate", help=text, description=text + ". Computed on exactly the "
                       "rows given, with the predictions of ONNX Runtime on the export.")
    p.add_argument("model", metavar="EXPORT_DIR", help="an export folder")
    p.add_argument("csv", metavar="DATA_CSV", help="labelled rows, with the label column the "
                   "spec named")
    p.add_argument("--out", metavar="DIR", help="also write evaluation.json, "
                   "confusion_matrix.png and (binary) roc.png here; existing files are refused")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--manifest-sha256", metavar="HASH", help="refuse an export whose manifest "
                   "has another sha256")


def _add_init(sub: _Subparsers) -> None:
    text = ("write a commented, valid spec for a CSV file: the input shape and columns from the "
            "file, the head from the label, a small MLP")
    p = sub.add_parser("init", help=text, description=text + ". Numeric columns become "
                       "features; a non-numeric one is left out with a comment that says what to "
                       "do. The label decides the head: text labels or few distinct integers "
                       "make a classifier, other numbers a regression (--task overrides).")
    p.add_argument("csv", metavar="DATA_CSV", help="the training data, with a header row")
    p.add_argument("--label", required=True, metavar="COLUMN", help="the label column")
    p.add_argument("--task", choices=["classification", "regression"],
                   help="the task (default: guessed from the label's values)")
    p.add_argument("--out", metavar="FILE", help="write the spec here (never overwritten) "
                   "instead of to standard output")


def _add_bench(sub: _Subparsers) -> None:
    text = ("measure symbuilder's training on this spec against a hand-written Module.fit "
            "loop, a Gluon twin and PyTorch (where installed), and ONNX Runtime against MXNet "
            "for inference; print a markdown table")
    p = _spec_command(sub, "bench", text, text + ". One process, contenders interleaved after "
                      "a warm-up, medians over --repeats runs of --epochs epochs each; progress "
                      "goes to stderr.")
    p.add_argument("--repeats", type=_positive_int, default=3, metavar="N",
                   help="timed runs per contender (default 3)")
    p.add_argument("--epochs", type=_positive_int, default=3, metavar="N",
                   help="epochs per timed run (default 3)")
    p.add_argument("--inference-repeats", type=_positive_int, default=5, metavar="N",
                   help="inference rounds (default 5)")
    p.add_argument("--no-gluon", action="store_true", help="leave out the Gluon twin")
    p.add_argument("--no-torch", action="store_true", help="leave out the PyTorch twin")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")


def _add_schema(sub: _Subparsers) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of the spec format",
                       description="print the JSON Schema of the spec format (for editors' "
                                   "YAML support), or the README's key table")
    p.add_argument("--markdown", action="store_true", help="the key reference as markdown")
    p.add_argument("--update-readme", metavar="README", help=argparse.SUPPRESS)


def _add_export(sub: _Subparsers) -> None:
    text = ("convert any MXNet Module checkpoint (PREFIX-symbol.json + PREFIX-EPOCH.params) to "
            "ONNX and verify it against MXNet in ONNX Runtime, as a build does")
    p = sub.add_parser("export", help=text, description=text + ". Without --data the check "
                       "uses standard-normal random inputs; with it, the real samples plus "
                       "random ones drawn over their per-feature range.")
    p.add_argument("prefix", metavar="PREFIX", help="checkpoint prefix, e.g. model/resnet")
    p.add_argument("epoch", metavar="EPOCH", type=_nonnegative_int, help="checkpoint epoch")
    p.add_argument("--input", action="append", required=True, metavar="NAME=D0,D1,...[:DTYPE]",
                   help="a data input, its shape, batch axis first, and its dtype (float32 "
                        "default; float16, float64, int8, int32, int64, uint8, bool), e.g. "
                        "data=1,3,32,32 or ids=1,16:int64 (repeatable; label variables need "
                        "none)")
    p.add_argument("--input-range", action="append", default=[], metavar="NAME=LOW:HIGH",
                   help="the values of that input's random samples: integers uniform in "
                        "[LOW, HIGH] for an integer input (default 0:9), floats uniform in "
                        "[LOW, HIGH) otherwise, e.g. ids=0:999 for an Embedding of 1000 rows "
                        "(repeatable)")
    p.add_argument("--out", metavar="FILE", help="the ONNX file (default PREFIX-EPOCH.onnx)")
    p.add_argument("--opset", type=int, default=17, choices=SUPPORTED_OPSETS, metavar="N",
                   help=f"ONNX opset, {SUPPORTED_OPSETS[0]}..{SUPPORTED_OPSETS[-1]} (default 17)")
    _export_check_options(p)
    p.add_argument("--fixed-batch", action="store_true",
                   help="keep the --input batch size fixed in the ONNX model")
    p.add_argument("--deploy-symbol", action="store_true",
                   help="also write PREFIX-deploy-symbol.json: the graph without loss heads "
                        "and labels, checked against the ONNX model")


def _export_check_options(p: argparse.ArgumentParser) -> None:
    """export's parity check: its tolerances and its samples."""
    p.add_argument("--atol", type=_positive_float, default=DEFAULT_ATOL, metavar="X",
                   help="absolute tolerance: fail when max|ort - mxnet| > atol + rtol * "
                        f"max|mxnet| for an output (default {DEFAULT_ATOL:g})")
    p.add_argument("--rtol", type=_nonnegative_float, default=DEFAULT_RTOL, metavar="X",
                   help="tolerance relative to the output's scale, max|mxnet| over the output "
                        f"(default {DEFAULT_RTOL:g})")
    p.add_argument("--data", metavar="FILE", help="real samples for the check: .npy, .npz "
                   "(array X) or .csv (every column a feature)")
    p.add_argument("--random", type=_nonnegative_int, default=DEFAULT_RANDOM_SAMPLES,
                   metavar="N", help=f"random samples in the check (default "
                                     f"{DEFAULT_RANDOM_SAMPLES})")


def _add_predict(sub: _Subparsers) -> None:
    text = "run an export on the rows of a CSV file and write the predictions as CSV"
    p = sub.add_parser("predict", help=text, description=text + ": class and p_<class> "
                       "columns for a classifier, the values for a regression. Columns are "
                       "matched by the manifest's feature names; a label column is ignored.")
    p.add_argument("model", metavar="EXPORT_DIR_OR_MODEL", help="an export folder or its .onnx")
    p.add_argument("csv", metavar="INPUT", nargs="+",
                   help="a CSV of rows to predict, with a header row (- reads standard "
                        "input); or, for an export built on images, image files "
                        "(.png/.jpg/.jpeg), folders of them, or one .rec (its .idx beside it), "
                        "decoded as the build decoded its images")
    p.add_argument("--out", metavar="FILE", help="write here instead of to standard output")
    p.add_argument("--keep", type=_columns, default=[], metavar="COLS",
                   help="columns to pass through, first in the output, exactly as in the "
                        "input (e.g. --keep id,ts)")
    p.add_argument("--checkpoint", action="store_true",
                   help="run the MXNet checkpoint instead of the ONNX model")
    p.add_argument("--manifest-sha256", type=_sha256, metavar="HASH",
                   help="refuse the export unless its manifest.json has this sha256 (the "
                        "build prints it)")


def _add_verify(sub: _Subparsers) -> None:
    text = ("check every file of an export folder against the manifest's sha256 and re-run "
            "the ONNX-vs-checkpoint parity check")
    p = sub.add_parser("verify", help=text, description=text + " (random samples drawn as the "
                       "build drew them, plus --data). Exit 1 names every changed, missing or "
                       "extra file.")
    p.add_argument("folder", metavar="EXPORT_DIR", help="an export folder (with manifest.json)")
    p.add_argument("--data", metavar="FILE", help="real samples to add: .npy, .npz or .csv "
                   "(columns matched by the manifest's feature names)")
    p.add_argument("--manifest-sha256", type=_sha256, metavar="HASH",
                   help="fail unless manifest.json has this sha256 (the build prints it): "
                        "the manifest's own fields (classes, atol, inputs) are then pinned too")


# The subcommands in the order `symbuilder --help` lists them; each adds its own arguments.
_SUBCOMMANDS: List[Callable[[_Subparsers], None]] = [
    _add_build, _add_launch, _add_validate, _add_summary, _add_evaluate, _add_init, _add_bench,
    _add_schema, _add_export, _add_predict, _add_verify,
]


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="symbuilder", description="Build, train and export MXNet networks "
                     "with a frozen-affine input normalization layer, from a YAML spec.")
    from . import __version__  # lazy: the package's __init__, cheap, but only --version needs it
    parser.add_argument("--version", action="version", version=f"symbuilder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add_subcommand in _SUBCOMMANDS:
        add_subcommand(sub)
    return parser


_SIGNALS = SIGNALS
EXIT_INTERRUPTED = 130  # SIGINT's shell convention; SIGTERM ends the same way (one line, 130)
_HEAVY = ("mxnet", "onnx", "onnxruntime")  # what every command but schema loads at start-up
# ... but build and validate: a checkpoint-only build never runs ONNX Runtime, so the proof
# imports it when it first needs a session (proof._ort, with signals blocked as here).
_HEAVY_FOR = {"build": ("mxnet", "onnx"), "validate": ("mxnet", "onnx")}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python raises KeyboardInterrupt for SIGINT: the same unwinding
    (staging folders removed, the previous export whole), the same clean end."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _ignore_signals() -> None:
    """From here on SIGINT and SIGTERM do nothing. Dispositions are process-wide: blocking
    them in the main thread is not enough once MXNet's and ORT's threads exist (a signal
    goes to any thread that does not block it)."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def _signals_handled(keep_ignored: bool) -> Iterator[None]:
    """SIGTERM raises Terminated while the command runs; at the end both signals are ignored
    (a late one must not cut the exit short), and restored unless `keep_ignored`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    old_hook = sys.unraisablehook
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.unraisablehook = _redeliver_interrupts
    try:
        yield
    finally:
        _ignore_signals()
        sys.unraisablehook = old_hook
        if not keep_ignored:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def _redeliver_interrupts(unraisable: Any) -> None:
    """A Ctrl-C that lands in a finalizer (an NDArray's __del__ while a frame unwinds) is
    swallowed there: Python prints "Exception ignored in ..." and the command goes on as if
    nothing happened. Send the signal again; it is raised in the code that freed the object,
    outside the finalizer, and ends the command cleanly like any other interrupt.

    Sent by another thread once this hook has returned: sent from here, the handler could
    run at the hook's own next bytecode and be swallowed once more, as "Exception ignored in
    sys.unraisablehook" (seen under load at 0.8 s of verify). The hook's last act is a C-level
    lock release, after which its frame runs no bytecode that checks for signals."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        sig = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        hook_done = _thread.allocate_lock()
        hook_done.acquire()
        threading.Thread(target=_send_after, args=(hook_done, sig), daemon=True).start()
        hook_done.release()
        return
    sys.__unraisablehook__(unraisable)


def _send_after(hook_done: Any, sig: int) -> None:
    hook_done.acquire()  # the hook has returned (or is returning)
    os.kill(os.getpid(), sig)


def _drop(*args: Any, **kwargs: Any) -> None:
    """print() for MXNet's modules: `infer_shape error. Arguments:` and the like go nowhere
    (symbuilder reports the error itself, as one located line)."""


class _NotMXNet(logging.Filter):
    """Drops the records MXNet logs on the root logger (`Params file ... is empty`, ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}mxnet{os.sep}" not in record.pathname


@contextlib.contextmanager
def _mxnet_quiet(verbose: bool) -> Iterator[None]:
    """MXNet's own chatter off unless --verbose: the print() calls in its Python modules
    (shadowed by a module-level `print`), its warnings, its root-logger records. The C++ side
    is MXNET_SUBGRAPH_VERBOSE=0, set before MXNet is imported."""
    mx_modules = [sys.modules.get(n) for n in ("mxnet.symbol.symbol", "mxnet.optimizer.optimizer")]
    mx_modules = [m for m in mx_modules if m is not None and not verbose]
    log_filter = _NotMXNet()
    for module in mx_modules:
        module.print = _drop  # type: ignore[attr-defined]
    if not verbose:
        logging.getLogger().addFilter(log_filter)
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.filterwarnings("ignore", module=r"mxnet(\..*)?$")
            yield
    finally:
        logging.getLogger().removeFilter(log_filter)
        for module in mx_modules:
            del module.print


def main(argv: Optional[List[str]] = None, *, keep_signals_ignored: bool = False) -> int:
    """The command's exit code. SIGINT and SIGTERM end it with one line and exit 130."""
    try:
        with _signals_handled(keep_signals_ignored):
            return _main(argv)
    except KeyboardInterrupt as e:  # in the instant between the command's end and the ignore
        _ignore_signals()
        return _interrupted(e, None)


def _main(argv: Optional[List[str]]) -> int:
    args = None
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # pending ones arrive here
        args = make_parser().parse_args(argv)
        verbose = getattr(args, "verbose", False)
        if not verbose:
            os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
        if args.command != "schema":
            import_blocking_signals(_HEAVY_FOR.get(args.command, _HEAVY))
        with _mxnet_quiet(verbose), _command_line(args.command, argv):
            return COMMANDS[args.command](args)
    except SymbuilderError as e:
        located = bool(getattr(e, "location", ""))
        prefix = "" if located else ("symbuilder: error: " if e.exit_code == EXIT_USAGE
                                     else "symbuilder: failed: ")
        print(f"{prefix}{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        _ignore_signals()  # nothing may cut this line short
        return _interrupted(e, args)
    except BrokenPipeError:
        # The reader went away (`| head`): whatever was running did not finish. Exit as a
        # shell reports SIGPIPE, and keep Python from complaining about the closed stream.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as e:  # after BrokenPipeError, one of its subclasses
        # A file system failure outside the user's control (disk full, a folder removed
        # under us): one line with the figures, exit 1, never a traceback.
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"symbuilder: failed: {e.strerror or e}{where}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _command_line(command: str, argv: Optional[List[str]]) -> Iterator[None]:
    """A build's manifest names the command line that ran it (sys.argv as the shell gave
    it; main(argv) from Python: `symbuilder` and argv). A library call leaves it None."""
    if command != "build":
        yield
        return
    from .export import COMMAND_LINE  # lazy: after import_blocking_signals, like every command
    token = COMMAND_LINE.set(list(sys.argv) if argv is None else ["symbuilder", *argv])
    try:
        yield
    finally:
        COMMAND_LINE.reset(token)


def _interrupted(error: KeyboardInterrupt, args: Optional[argparse.Namespace]) -> int:
    name = "SIGTERM" if isinstance(error, Terminated) else "SIGINT"
    command = getattr(args, "command", "")
    hint = " (continue with --resume)" if command == "build" else ""
    written = ("; the export is the previous one or the new one, whole"
               if command in ("build", "export") else "")
    print(f"symbuilder: interrupted ({name}){written}{hint}", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def run() -> None:
    code = main(keep_signals_ignored=True)  # a late signal must not interrupt the exit
    from .training.distributed import exit_failed_worker  # lazy: per command
    exit_failed_worker(code)  # a failed dist worker must not wait in the kvstore's barrier
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
