"""The `symbuilder` command: argument parsing -> library calls -> exit codes.

Exit codes: 0 ok; 1 a run that failed (with the figures); 2 a bad spec, bad data or bad
usage (one located line). No MXNet import here: library modules load it when needed.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional

from .errors import SymbuilderError, UsageError

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
    from .spec.model import load_spec
    return load_spec(args.spec, overrides=args.set or None)


def cmd_build(args: argparse.Namespace) -> int:
    from .pipeline import build
    spec = _load(args)
    progress = None if args.quiet else _say
    out = build(spec, out_dir=args.out, epochs=args.epochs, progress=progress,
                verbose=args.verbose)
    metrics = out.manifest["metrics"]["val"]
    parity = out.manifest.get("parity")
    figures = "  ".join(f"val {k}={v:.4f}" for k, v in metrics.items())
    if parity:
        figures += f"  onnx max|diff|={parity['max_abs']:.2g}"
    print(f"{out.out_dir}: {figures}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from .checks import validate
    spec = _load(args)
    summary = validate(spec, check_data=not args.no_data)
    print(f"{args.spec}: ok ({summary})")
    return EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    from .checks import summary_table
    spec = _load(args)
    print(summary_table(spec))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .spec import schema
    if args.update_readme:
        with open(args.update_readme) as f:
            text = f.read()
        with open(args.update_readme, "w") as f:
            f.write(schema.readme_with_reference(text))
        return EXIT_OK
    sys.stdout.write(schema.markdown_reference() if args.markdown else schema.json_schema_text())
    return EXIT_OK


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "build": cmd_build, "validate": cmd_validate, "summary": cmd_summary, "schema": cmd_schema,
}


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="symbuilder", description="Build, train and export MXNet networks "
                     "with a frozen-affine input normalization layer, from a YAML spec.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"symbuilder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def spec_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("spec", metavar="SPEC", help="the YAML spec file")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a spec value, e.g. --set train.epochs=5 "
                            "--set layers[0].num_hidden=32 (repeatable)")
        return p

    p = spec_command("build", "train the spec's network and export it to export/<name>/")
    p.add_argument("--out", metavar="DIR", help="export folder (default export/<name>)")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="override train.epochs")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-epoch progress")
    p.add_argument("--verbose", "-v", action="store_true", help="show MXNet's own logging")

    p = spec_command("validate", "check everything that can be checked without training: "
                     "keys, ops, attributes, shapes, data files, label columns, ONNX support")
    p.add_argument("--no-data", action="store_true", help="do not read the data files")

    spec_command("summary", "print the layers with output shapes and parameter counts")

    p = sub.add_parser("schema", help="print the JSON Schema of the spec format",
                       description="print the JSON Schema of the spec format (for editors' "
                                   "YAML support), or the README's key table")
    p.add_argument("--markdown", action="store_true", help="the key reference as markdown")
    p.add_argument("--update-readme", metavar="README", help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verbose", False):
        os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
    try:
        return COMMANDS[args.command](args)
    except SymbuilderError as e:
        located = bool(getattr(e, "location", ""))
        prefix = "" if located else ("symbuilder: error: " if e.exit_code == EXIT_USAGE
                                     else "symbuilder: failed: ")
        print(f"{prefix}{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; the previous export (if any) is unchanged", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
