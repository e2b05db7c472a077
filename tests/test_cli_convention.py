"""One CLI convention: help on every option, --json on every command that prints results, one way to
name a study, and an export that `bocb analyze` reads as it is."""

from __future__ import annotations

import argparse
import csv
import io
import json

import pandas as pd

from cli_inproc import bocb
from test_report_analysis import grid_store

from bocb.analysis import flag, load_results, rule
from bocb.analysis.from_store import results_frame
from bocb.cli import build_parser
from bocb.store import SQLiteStore
from bocb.study import load_study


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every runnable command's parser, with its words (``zoo backbones``, ``run``, ...)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


def test_every_option_has_help_and_every_command_takes_json():
    leaves = list(_leaves(build_parser()))
    assert len(leaves) >= 17  # zoo x3, paper x3, train, run, transfer, diagnose, analyze, report, ...
    silent = [(" ".join(words), a.option_strings) for words, p in leaves for a in p._actions
              if a.option_strings and a.help is None]
    assert silent == []
    without_json = [" ".join(words) for words, p in leaves
                    if not any("--json" in a.option_strings for a in p._actions)]
    assert without_json == []


def test_store_help_is_the_same_everywhere():
    helps = {" ".join(words): a.help for words, p in _leaves(build_parser()) for a in p._actions
             if "--store" in a.option_strings}
    assert {"run", "transfer", "status", "plan", "export", "report", "diagnose"} <= set(helps)
    assert all("bocb-results/store.sqlite" in h for h in helps.values())


def test_export_feeds_analyze_and_takes_the_study_positionally(tmp_path):
    study_file, store_path = grid_store(tmp_path)
    out = tmp_path / "export.csv"
    assert bocb("export", study_file, "--store", store_path, "--out", out).returncode == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 36 and {"top1", "final_top1", "status", "trial_id"} <= set(rows[0])
    # The old spelling still works and gives the same file.
    old = tmp_path / "old.csv"
    assert bocb("export", "--study", study_file, "--store", store_path, "--out", old).returncode == 0
    assert old.read_text() == out.read_text()
    both = bocb("export", study_file, "--study", study_file, "--store", store_path)
    assert both.returncode == 2 and "give the study once" in both.stderr

    done = bocb("analyze", out, "--json")
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    # The failed trial is not a result: left out, and the flags equal the analysis of the store itself.
    assert counts["rows_left_out"] == 1
    with SQLiteStore(store_path) as store:
        direct = flag(load_results(results_frame(store, load_study(study_file).study_id)), rule("fitted"))
    assert counts["pairs"] == len(direct) == 9
    assert counts["flagged"] == int(direct["flagged"].sum())

    records = json.loads(bocb("export", study_file, "--store", store_path, "--json").stdout)
    assert len(records) == 36 and {r["trial_id"] for r in records} == {r["trial_id"] for r in rows}


def test_json_output_is_json_alone(tmp_path):
    study_file, store_path = grid_store(tmp_path)
    for argv in (["zoo", "optimizers", "--json"], ["paper", "hparams", "--json"], ["paper", "protocol", "--json"],
                 ["status", study_file, "--store", store_path, "--json"],
                 ["plan", study_file, "--store", store_path, "--json"]):
        done = bocb(*argv)
        assert done.returncode == 0, (argv, done.stderr)
        json.loads(done.stdout)  # the whole of stdout is one JSON document
    plan = json.loads(bocb("plan", study_file, "--store", store_path, "--json").stdout)
    # 3 backbones x 3 optimizers x 2 learning rates x each optimizer's weight-decay grid, as the table says.
    assert plan["trials"] % 18 == 0 and set(plan["per_backbone"]) == {"R-50", "CNX-T", "DeiT-S"}
    table = " ".join(bocb("plan", study_file, "--store", store_path).stdout.split())
    assert f"{plan['trials']} trials" in table and f"about {plan['gpu_hours']:.1f} GPU-hours" in table


def test_zoo_tables_fit_100_columns_without_wrapping_a_row():
    from rich.console import Console

    from bocb import views

    for frame, columns in ((views.backbone_frame(), views.BACKBONE_SCREEN),
                           (views.optimizer_frame(), views.OPTIMIZER_SCREEN)):
        console = Console(width=100, record=True, file=open("/dev/null", "w"))
        frame = pd.concat([frame, frame.tail(1).assign(short="a-plug-in-name-" * 6)], ignore_index=True)
        views.print_frame(console, views.for_screen(frame, columns, "table"), "table", title="t", one_line_rows=True)
        lines = console.export_text().splitlines()
        assert max(len(line) for line in lines) <= 100
        body = [line for line in lines if line.startswith("│")]
        assert len(body) == len(frame)  # one line per row: nothing folded onto a second line
    # csv and json keep every column
    assert list(views.for_screen(views.backbone_frame(), views.BACKBONE_SCREEN, "csv").columns) == \
        list(views.backbone_frame().columns)


def test_ctrl_c_in_a_command_without_its_own_handling_is_one_line_and_130(monkeypatch):
    """bocb train (and any command but run/transfer, which hand trials back): no traceback."""
    import contextlib
    import io

    from bocb import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.COMMANDS["train"], "run", interrupted)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(["train", "--backbone", "R-18", "--device", "cpu"])
    assert rc == 130 and err.getvalue().startswith("bocb: stopped (Ctrl-C)") and len(err.getvalue().splitlines()) == 1


def test_train_refuses_a_misspelled_recipe_and_a_missing_gpu_in_one_line():
    done = bocb("train", "--backbone", "R-18", "--recipe", "smok", "--device", "cpu")
    assert done.returncode == 2 and "did you mean smoke?" in done.stderr and len(done.stderr.splitlines()) == 1
    import torch

    if not torch.cuda.is_available():
        done = bocb("train", "--backbone", "R-18", "--recipe", "smoke", "--device", "cuda")
        assert done.returncode == 2 and "CUDA is not available" in done.stderr


def test_paper_table_too_wide_for_the_terminal_is_listed_per_backbone():
    from rich.console import Console

    from bocb import views

    console = Console(width=100, record=True, file=open("/dev/null", "w"))
    views.print_paper_table(console, "table")
    text = console.export_text()
    assert text.startswith("Table 1 needs") and "…" not in text
    # The paper's R-50 column (Table 1): AdaBelief 80.53 best, then NovoGrad, SGDP, SGD-M; AdaGrad grey.
    assert "R-50: best AdaBelief 80.53; top 4 also NovoGrad, SGDP, SGD-M; failed (1): AdaGrad" in text
    wide = Console(width=300, record=True, file=open("/dev/null", "w"))
    views.print_paper_table(wide, "table")
    assert "┃ optimizer ┃" in wide.export_text()
