"""The ``bocb`` command line.

Only this module reads argv and prints for humans; library code takes values and returns them.

Exit status: 0 success; 1 the work ran but did not all succeed (``bocb train``: the trial failed;
``bocb run``/``transfer``: some trials failed or are left unfinished); 2 bad input or a fault in a
file the command reads or writes (unknown name, out-of-range value, damaged store, checkpoint or
Parquet file, missing folder, full disk): one line on stderr that names the file or value and what
to do, no traceback, and no existing file changed; 130 stopped with Ctrl-C.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import sys
import time
from collections.abc import Sequence

from rich.console import Console

from bocb.commands import analyze, diagnose, probe, recommend, report, run, status, train, transfer
from bocb.commands.common import plugins_of
from bocb.registry import UnknownNameError

# Commands implemented in bocb.commands (each: add_parser, run).
COMMANDS = {"train": train, "run": run, "transfer": transfer, "diagnose": diagnose, "analyze": analyze,
            "report": report, "recommend": recommend, "probe": probe}


def _add_format(p: argparse.ArgumentParser, formats: tuple[str, ...] = ("table", "csv", "json")) -> None:
    """--format, and --json as its short form (the one JSON flag every results command takes)."""
    p.add_argument("--format", choices=formats, default="table", help=f"{', '.join(formats)} (default: table)")
    p.add_argument("--json", action="store_const", dest="format", const="json", help="same as --format json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bocb", description="Measure backbone-optimizer coupling bias in vision models."
    )
    parser.add_argument("--version", action="version", version=f"bocb {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    zoo = sub.add_parser("zoo", help="list the backbones and optimizers bocb knows")
    zoo_sub = zoo.add_subparsers(dest="what", required=True, metavar="WHAT")
    b = zoo_sub.add_parser("backbones", help="the backbone registry with metadata and sizes")
    _add_format(b)
    b.add_argument("--group", help="only backbones of this group (e.g. 'modern CNN')")
    b.add_argument("--paper-only", action="store_true", help="only the paper's 20 backbones")
    o = zoo_sub.add_parser("optimizers", help="the optimizer registry with grids and flags")
    _add_format(o)
    o.add_argument("--category", help="only this category: a, b, c, d or extra")
    o.add_argument("--paper-only", action="store_true", help="only the paper's 20 optimizers")
    s = zoo_sub.add_parser("show", help="everything about one backbone or optimizer")
    s.add_argument("name")
    s.add_argument("--lr", type=float, help="optimizer: resolve with this learning rate")
    s.add_argument("--wd", type=float, help="optimizer: resolve with this weight decay")
    s.add_argument("--json", action="store_true", help="accepted for uniformity: the output is JSON already")

    paper = sub.add_parser("paper", help="the BOCB paper's published numbers")
    paper_sub = paper.add_subparsers(dest="what", required=True, metavar="WHAT")
    t = paper_sub.add_parser("table", help="Table 1: CIFAR-100 top-1, 20 backbones x 20 optimizers")
    _add_format(t)
    h = paper_sub.add_parser("hparams", help="Tables A4/A5: chosen lr and weight decay")
    _add_format(h)
    pr = paper_sub.add_parser("protocol", help="fidelity table: the paper's / released configs' value of every "
                                               "recipe setting, backbone override and optimizer knob next to bocb's")
    _add_format(pr, ("table", "csv", "json", "markdown"))
    pr.add_argument("--differences", action="store_true", help="only the settings where bocb differs")

    for command in COMMANDS.values():
        command.add_parser(sub)
    status.add_parsers(sub)  # status, plan, export: each sets args.func
    for name, command_parser in sub.choices.items():
        if name not in ("zoo", "paper"):  # those take it before WHAT: bocb --plugin M zoo backbones
            _add_plugin(command_parser)
    _add_plugin(parser)
    return parser


PLUGIN_HELP = ("import MODULE first (repeatable): a module that registers backbones or optimizers "
               "(bocb.zoo.register_backbone, bocb.optim.optimizer); the workers of a run import it too")


def _add_plugin(parser: argparse.ArgumentParser) -> None:
    # Each level keeps its own list (a subcommand's default would otherwise reset bocb's).
    dest = "plugins_" + ("top" if parser.prog == "bocb" else "command")
    parser.add_argument("--plugin", action="append", dest=dest, metavar="MODULE", default=[], help=PLUGIN_HELP)



def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("bocb")
    except metadata.PackageNotFoundError:
        return "unknown"


def entry() -> None:
    """The ``bocb`` program (and ``python -m bocb``): :func:`main`, then exit.

    Before exiting, every object is moved out of the garbage collector's reach (``gc.freeze``):
    the interpreter's final collection then has nothing to walk. With torch, timm and pandas
    imported that collection took 1.9-2.4 s after the last line of output of every command; now
    the exit takes 0.5 s (``bocb run`` on 2 idle cores). Nothing is lost: the process ends, and
    files and the store are closed by then. :func:`main` itself does not do this, as tests and
    Python callers keep using their interpreter afterwards."""
    code = main()
    gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.time()
    args = build_parser().parse_args(argv)
    args.started = started  # when the command began (bocb probe's budget counts from it)
    # Wide tables stay readable when piped (rich would otherwise fold them to 80 columns), unless
    # COLUMNS says how wide the reader is.
    columns = os.environ.get("COLUMNS", "")
    piped_width = int(columns) if columns.isdigit() and int(columns) >= 40 else 240
    console = Console(width=None if sys.stdout.isatty() else piped_width)
    try:
        if plugins_of(args):
            from bocb.plugins import load_plugins

            load_plugins(plugins_of(args))
        if args.command in COMMANDS:
            return COMMANDS[args.command].run(args)
        if hasattr(args, "func"):
            return args.func(args)
        if args.command == "zoo":
            from bocb import views

            if args.what == "backbones":
                views.print_frame(
                    console, views.for_screen(views.backbone_frame(group=args.group, paper_only=args.paper_only),
                                              views.BACKBONE_SCREEN, args.format),
                    args.format, title="Backbones (every column: --format csv|json; one: bocb zoo show NAME)",
                    one_line_rows=True,
                )
            elif args.what == "optimizers":
                views.print_frame(
                    console, views.for_screen(views.optimizer_frame(category=args.category, paper_only=args.paper_only),
                                              views.OPTIMIZER_SCREEN, args.format),
                    args.format, title="Optimizers (grids and every column: --format csv|json or bocb zoo show NAME)",
                    one_line_rows=True,
                )
            else:
                console.print_json(json.dumps(views.describe(args.name, lr=args.lr, wd=args.wd)))
        elif args.command == "paper":
            from bocb import views

            if args.what == "table":
                views.print_paper_table(console, args.format)
            elif args.what == "protocol":
                views.print_protocol(console, args.format, args.differences)
            else:
                from bocb import paper as paper_data

                views.print_frame(console, paper_data.best_hparams(), args.format,
                                  title="Paper Tables A4/A5: chosen lr and weight decay")
    except (UnknownNameError, ValueError) as err:
        return _fail(err)
    except KeyboardInterrupt:
        # bocb run/transfer handle Ctrl-C themselves (trials handed back); anything else stops here,
        # in one line: a trial with --work-dir resumes from its last checkpoint when run again.
        print("bocb: stopped (Ctrl-C); run the same command again to resume what keeps checkpoints",
              file=sys.stderr)
        return 130
    except sqlite3.DatabaseError as err:
        # Raised after the store opened (a page damaged deep in the file, a disk that filled up).
        store = getattr(args, "store", None)
        return _fail(f"store {store}: {err}: nothing was changed by the failed write; free space or "
                     f"restore the file (`sqlite3 {store} .recover` salvages a damaged one)")
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        return _fail(f"{where}{err.strerror or err}")
    except Exception as err:  # noqa: BLE001 - file-format faults from the readers (safetensors, Arrow)
        from safetensors import SafetensorError
        from pyarrow import ArrowException

        if isinstance(err, (SafetensorError, ArrowException)):
            return _fail(f"cannot read the file: {type(err).__name__}: {err}")
        raise
    return 0


def _fail(err: object) -> int:
    """The one stderr line of a failed command (exit status 2)."""
    text = " ".join(str(err).split())  # one line, whatever the message held
    print(f"bocb: error: {text}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
