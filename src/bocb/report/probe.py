"""The probe's HTML page (``probe.html``): the answer first, then the optimizers, the learning curves
and how the probe was sized. Self-contained, as every bocb report (:mod:`bocb.report.html`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd

from bocb.report.document import Plot, Section, Table, Text, fmt
from bocb.report.html import render_html
from bocb.report.plots import new_figure, save_figure


def answer_lines(answer: Any) -> list[str]:
    """The answer in plain sentences, shared by the page and the terminal."""
    lines = []
    use = answer.use
    crashed = [r for r in answer.optimizers if r.state.startswith("crashed")]
    if use is None and any(r.flagged for r in answer.optimizers) and all(
            r.flagged or r.state.startswith("crashed") for r in answer.optimizers):
        lines.append(f"No probed optimizer trains {answer.backbone}: every one diverged or was flagged"
                     + (", or crashed" if crashed else "") + ". Try others (--optimizers) or check the model.")
    elif use is None:
        lines.append("No optimizer finished a trial within the budget: no answer yet (the same command continues).")
    else:
        fidelity = (f"after {use.epoch} epochs" if use.full_budget
                    else f"at epoch {use.epoch} of {answer.epochs}, before its search finished")
        if use.full_budget and use.state.startswith("incomplete"):
            fidelity += " (the best so far: its search had not finished)"
        lines.append(f"Use {use.optimizer} with lr {use.lr:g} and weight decay {use.weight_decay:g}: test top-1 "
                     f"{use.score:.1f} % {fidelity}.")
    unfinished = [r.optimizer for r in answer.optimizers if r.state.startswith("incomplete")]
    if answer.fails:
        lines.append(f"Fails on {answer.backbone}: {', '.join(answer.fails)} (its tuned candidates all diverged, or "
                     f"the failure rule flags its tuned score, further below the best than the test noise explains).")
    elif not answer.judged:
        lines.append("Failures not judged: fewer than three optimizers finished their search at the full schedule"
                     + (f" (unfinished: {', '.join(unfinished)})." if unfinished else "."))
    else:
        lines.append(f"None of the probed optimizers fails on {answer.backbone}"
                     + (f" (not judged, their searches unfinished: {', '.join(unfinished)})." if unfinished else "."))
    for r in crashed:
        lines.append(f"{r.optimizer} {r.state} (an error, not a divergence: not counted as a failure).")
    lines.append(answer.verdict.text)
    lines.append(answer.caveat + ".")
    return lines


def _table(answer: Any) -> Table:
    rows, marks = [], []
    for r in answer.optimizers:
        rows.append({
            "optimizer": r.optimizer, "lr": "–" if r.lr is None else f"{r.lr:g}",
            "weight decay": "–" if r.weight_decay is None else f"{r.weight_decay:g}",
            "test top-1 %": fmt(r.score, 1), "at epoch": fmt(r.epoch), "search": r.state,
            "trials": str(r.trials), "trial-epochs": str(r.trial_epochs),
            "paper: gap to best": fmt(r.paper_gap, 1),
            "paper: fails on": "–" if r.paper_risk is None else f"{100 * r.paper_risk:.0f} %",
        })
        mark = "fail" if r.flagged else "best" if answer.use is not None and r.optimizer == answer.use.optimizer else ""
        marks.append({k: mark for k in rows[-1]})
    cells = pd.DataFrame(rows).set_index("optimizer")
    return Table(cells, caption=f"Each optimizer at its chosen setting; flagged ones greyed. 'paper': the paper's "
                                f"{answer.verdict.family}.", marks=pd.DataFrame(marks).set_index("optimizer"))


def curves_figure(answer: Any):
    """Test top-1 and train loss per epoch of each optimizer's chosen trial; flagged ones dashed."""
    fig = new_figure(10.0, 3.8)
    top1, loss = fig.subplots(1, 2)
    for r in answer.optimizers:
        if not r.curve:
            continue
        epochs = [c[0] for c in r.curve]
        style = "--" if r.flagged else "-"
        label = f"{r.optimizer}{' (flagged)' if r.flagged else ''}"
        top1.plot(epochs, [c[1] for c in r.curve], style, marker="o", markersize=3, label=label)
        loss.plot(epochs, [c[2] for c in r.curve], style, marker="o", markersize=3, label=label)
    top1.set(xlabel="epoch", ylabel="test top-1 (%)", title=f"{answer.backbone}: test top-1")
    loss.set(xlabel="epoch", ylabel="train loss", title="train loss")
    top1.legend(fontsize=8)
    for ax in (top1, loss):
        ax.grid(alpha=0.3)
    return fig


def write_page(answer: Any, folder: Path) -> Path:
    """Write ``probe.html`` (and the curves as ``curves.png``/``.svg``) into ``folder``."""
    fig = curves_figure(answer)
    save_figure(fig, folder / "curves")
    png = io.BytesIO()
    fig.savefig(png, dpi=150, format="png")
    speed = answer.throughput
    how = [Text(f"Sizing: {answer.sizing}."), Text(
        f"Ran {answer.epochs} epochs per full-budget trial on "
        f"{'all' if answer.train_per_class is None else answer.train_per_class} training images per class, scored on "
        f"{answer.test_images} test images; one seed; adaptive tuning (successive halving over epochs, then a climb "
        f"to an interior optimum).")]
    if speed is not None:
        how.append(Text(f"Measured before sizing: {speed.train_s * 1e3:.2f} ms per training image, "
                        f"{speed.eval_s * 1e3:.2f} ms per test image, {speed.launch_s:.1f} s to start a trial."))
    budget = "no time budget" if answer.budget_s is None else f"a budget of {answer.budget_s:.0f} s"
    how.append(Text(f"Wall time {answer.wall_s:.0f} s for {budget}. The study the probe ran: {answer.study}; "
                    f"its store: {answer.store}."))
    sections = [
        Section("Answer", tuple(Text(t) for t in answer_lines(answer))),
        Section("Optimizers", (_table(answer),),
                how_to_read="Top-1 is the last epoch's test accuracy of each optimizer's chosen (lr, weight decay). "
                            "'search' says whether the tuner finished (an interior optimum, or one at a hard limit) "
                            "or the budget stopped it."),
        Section("Learning curves", (Plot(fig, "curves", "Each optimizer's chosen trial, epoch by epoch."),)),
        Section("How this was measured", tuple(how)),
    ]
    page = render_html(f"Which optimizer for {answer.backbone}?", sections, {"curves": png.getvalue()},
                       subtitle=f"bocb probe on {answer.data}; design family {answer.family}")
    path = folder / "probe.html"
    path.write_text(page)
    return path
