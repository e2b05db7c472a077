"""Tables of the registries and the paper's data, for the CLI (and notebooks).

Functions here return pandas frames or plain dicts; :func:`print_frame` renders a frame as a rich
table, CSV or JSON. Nothing here trains or stores anything.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from bocb import paper
from bocb.optim import OPTIMIZERS, get_optimizer_info, list_optimizers, resolve_optimizer
from bocb.registry import UnknownNameError
from bocb.zoo import BACKBONES, count_params, list_backbones, resolve_backbone

# Parameter counts in the listing are for the study's setting: CIFAR-100 head, default policy.
LISTING_CLASSES = 100


def backbone_frame(group: str | None = None, paper_only: bool = False) -> pd.DataFrame:
    """One row per backbone; ``params_m`` is the paper-size model with a 100-class head at its
    default input policy, ``tiny_params_m`` its tiny scale, ``published_params_m`` the published
    ImageNet-1k count."""
    infos = list_backbones()
    if group is not None:
        groups = sorted({b.group for b in infos})
        if group not in groups:
            raise ValueError(f"unknown backbone group {group!r}: valid: {', '.join(groups)}")
        infos = [b for b in infos if b.group == group]
    if paper_only:
        infos = [b for b in infos if b.paper]
    rows = []
    for b in infos:
        paper_spec = resolve_backbone(b.name, num_classes=LISTING_CLASSES)
        tiny_spec = resolve_backbone(b.name, num_classes=LISTING_CLASSES, scale="tiny")
        rows.append({
            "name": b.name,
            "short": b.short,
            "model": b.model,
            "group": b.group,
            "stages": b.stages,
            "block": b.block,
            "token_mixer": b.token_mixer,
            "residual_norm": b.residual_norm,
            "default_policy": b.default_policy,
            "input_size": paper_spec.input_size,
            "source": b.source,
            "params_m": round(count_params(paper_spec) / 1e6, 2),
            "tiny_params_m": round(count_params(tiny_spec) / 1e6, 3),
            "published_params_m": b.published_params_m,
            "paper": b.paper,
        })
    return pd.DataFrame(rows)


def _fmt_grid(grid: tuple[float, ...]) -> str:
    return " ".join(f"{v:g}" for v in grid)


# What the terminal table of `bocb zoo backbones/optimizers` shows (column -> header), chosen to fit
# 100 columns; csv and json keep every column.
BACKBONE_SCREEN = {"short": "short", "group": "group",
                   "default_policy": "policy", "input_size": "input", "params_m": "M params",
                   "tiny_params_m": "tiny M", "paper": "paper"}
OPTIMIZER_SCREEN = {"short": "short", "name": "name", "category": "cat", "library": "library", "lr": "lr",
                    "weight_decay": "wd", "wd_style": "wd style", "paper": "paper"}


def for_screen(frame: pd.DataFrame, columns: dict[str, str], fmt: str) -> pd.DataFrame:
    """``frame`` cut to ``columns`` (renamed) for the table format; whole for csv and json."""
    if fmt != "table":
        return frame
    out = frame[list(columns)].rename(columns=columns)
    return out.assign(paper=out["paper"].map({True: "yes", False: ""}))


def optimizer_frame(category: str | None = None, paper_only: bool = False) -> pd.DataFrame:
    """One row per optimizer with its source class, grid centres and grids, and step flags."""
    rows = []
    for o in list_optimizers(category=category, paper=True if paper_only else None):
        rows.append({
            "name": o.name,
            "short": o.short,
            "category": o.category,
            "source": o.source,
            "library": o.library,
            "lr": o.lr,
            "weight_decay": o.weight_decay,
            "lr_grid": _fmt_grid(o.lr_grid()),
            "wd_grid": _fmt_grid(o.wd_grid()),
            "wd_style": o.wd_style,
            "paper_wd_policy": o.paper_wd_policy,
            "curvature": o.curvature,
            "train_eval": o.needs_train_eval,
            "paper": o.paper,
        })
    return pd.DataFrame(rows)


def describe(name: str, lr: float | None = None, wd: float | None = None) -> dict[str, Any]:
    """Backbone or optimizer metadata; for an optimizer also its fully resolved spec. A registered
    optimizer is found before a backbone name is looked up in timm (which imports timm)."""
    if name in OPTIMIZERS and not BACKBONES.registered(name):
        return _describe_optimizer(name, lr, wd)
    if name in BACKBONES:
        info = BACKBONES.get(name)
        from bocb.recipes import recipe_for

        out = {k: v for k, v in vars(info).items() if k != "builder"}
        out["recipe_overrides"] = dict(info.recipe_overrides)
        out["input_size"] = {p: info.input_size(p) for p in ("cifar", "upsample")}
        # The recipe a paper-tier trial of this backbone runs, overrides applied and named.
        return {"backbone": out, "recipe": recipe_for(info).to_dict()}
    if name in OPTIMIZERS:
        return _describe_optimizer(name, lr, wd)
    # Neither: report the closest names of both kinds in one line.
    close = []
    for registry in (BACKBONES, OPTIMIZERS):
        try:
            registry.get(name)
        except UnknownNameError as err:
            close += err.close
    valid = BACKBONES.names() + OPTIMIZERS.names()
    raise UnknownNameError("backbone or optimizer", name, close[:3], valid)


def _describe_optimizer(name: str, lr: float | None, wd: float | None) -> dict[str, Any]:
    info = get_optimizer_info(name)
    out = {k: v for k, v in vars(info).items() if k not in ("fixed", "exempt_options")}
    out["fixed"], out["exempt_options"] = dict(info.fixed), dict(info.exempt_options)
    out["lr_grid"], out["wd_grid"] = info.lr_grid(), info.wd_grid()
    return {"optimizer": out, "resolved": resolve_optimizer(name, lr=lr, weight_decay=wd).to_dict()}


def print_protocol(console: Console, fmt: str, differences_only: bool = False) -> None:
    """``bocb paper protocol``: the fidelity table (:mod:`bocb.protocol`)."""
    from dataclasses import asdict

    from bocb import protocol

    if fmt == "markdown":
        print(protocol.markdown(), end="")
        return
    rows = protocol.differences() if differences_only else protocol.table()
    frame = pd.DataFrame([asdict(r) for r in rows])
    if fmt == "table":
        frame["same"] = frame["same"].map({True: "", False: "≠"})
    print_frame(console, frame, fmt, title="Fidelity to the paper's protocol" + (" (differences)" if differences_only else ""))


def print_frame(console: Console, df: pd.DataFrame, fmt: str, title: str = "", one_line_rows: bool = False) -> None:
    """``df`` as a table, CSV or JSON; ``one_line_rows``: cells too wide end in an ellipsis rather
    than folding a row over several lines (the zoo listings: long external or plug-in names)."""
    if fmt == "csv":
        # Plain print: rich would wrap long lines and mark up brackets.
        print(df.to_csv(index=False), end="")
    elif fmt == "json":
        print(df.to_json(orient="records"))
    else:
        table = Table(title=title or None, show_lines=False)
        for col in df.columns:
            table.add_column(str(col), overflow="ellipsis" if one_line_rows else "fold", no_wrap=one_line_rows)
        for row in df.itertuples(index=False):
            table.add_row(*[_cell(v) for v in row])
        console.print(table)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value)


_MARK_STYLE = {"best": "bold green", "top4": "green", "fail": "dim", "severe": "dim italic"}


def print_paper_table(console: Console, fmt: str) -> None:
    """Table 1 (optimizers x backbones) with the paper's marks, and its summary rows."""
    if fmt in ("csv", "json"):
        # Long format, one row per cell with its mark: what a reader joins or plots. The summary
        # rows (mean, std, range per backbone) are derived figures, not data: only the table shows them.
        cells = paper.top1()[["optimizer", "category", "backbone", "top1", "mark"]]
        print(cells.to_csv(index=False) if fmt == "csv" else cells.to_json(orient="records"), end="" if fmt == "csv" else "\n")
        return
    top1, marks = paper.table1("top1"), paper.table1("mark")
    summary = paper.summary().set_index("backbone")
    table = Table(
        title="BOCB paper, Table 1: CIFAR-100 top-1 (%), 200 epochs, mean of 3 runs",
        caption="bold green: best; green: other top-4; dim: failed (grey in the paper); "
                "dim italic: severe failure (light grey). Summary rows: after dropping each "
                "backbone's worst optimizer, as printed.",
    )
    table.add_column("optimizer")
    table.add_column("cat")
    categories = paper.top1().drop_duplicates("optimizer").set_index("optimizer")["category"]
    for col in top1.columns:
        table.add_column(col, justify="right")
    for opt in top1.index:
        cells = []
        for col in top1.columns:
            style = _MARK_STYLE.get(marks.loc[opt, col], "")
            text = f"{top1.loc[opt, col]:.2f}"
            cells.append(f"[{style}]{text}[/]" if style else text)
        table.add_row(opt, categories[opt], *cells)
    table.add_section()
    for stat in ("mean", "std", "range"):
        table.add_row(stat, "", *[_cell(summary.loc[c, stat]) for c in top1.columns])
    needed = console.measure(table, options=console.options.update_width(10_000)).maximum  # uncapped
    if needed > console.width:
        # 20 backbones do not fit: squeezed cells would all read "…". Per backbone in lines instead.
        console.print(f"Table 1 needs {needed} columns, the terminal has {console.width}: per backbone "
                      "below (widen the terminal for the table, or --format csv|json for the data).",
                      highlight=False)
        _paper_table_by_backbone(console, top1, marks)
        return
    console.print(table)


def _paper_table_by_backbone(console: Console, top1: pd.DataFrame, marks: pd.DataFrame) -> None:
    """Table 1 as one line per backbone: its best, the rest of its top 4, and what failed."""
    console.print("BOCB paper, Table 1: CIFAR-100 top-1 (%), 200 epochs, mean of 3 runs", style="bold",
                  highlight=False)
    for backbone in top1.columns:
        column, mark = top1[backbone].sort_values(ascending=False), marks[backbone]
        best = [o for o in column.index if mark[o] == "best"]
        top = [o for o in column.index if mark[o] == "top4"]
        failed = [o for o in column.index if mark[o] in ("fail", "severe")]
        console.print(
            f"[bold]{backbone}[/]: best {', '.join(f'{o} {column[o]:.2f}' for o in best)}; "
            f"top 4 also {', '.join(top) or '–'}; failed ({len(failed)}): {', '.join(failed) or 'none'}",
            highlight=False)
