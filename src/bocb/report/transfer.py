"""The transfer section (pre-training optimizer x fine-tuning optimizer): per pre-trained model, which fine-tuning optimizers
fail; per pre-training optimizer, how often; and how far fine-tuning moved the backbone.

The statistics are :mod:`bocb.analysis.transfer`'s; the pre-train x fine-tune table itself is the
report's main table (columns are the pre-trained models).
"""

from __future__ import annotations

import pandas as pd

from bocb.analysis.failure import FailureRule
from bocb.analysis.transfer import failure_rates, failures_by_pretraining, movement, pattern_retention
from bocb.report.document import Section, Table, Text, fmt, percent


def transfer_section(results: pd.DataFrame, flags: pd.DataFrame, chosen: FailureRule,
                     finetuned: pd.DataFrame, pretrained: pd.DataFrame, pre_ids: dict[str, str]) -> Section:
    """``results``/``flags``: the transfer frame and its flags; ``finetuned``/``pretrained``: weights
    frames of the fine-tuned and pre-trained snapshots; ``pre_ids``: label -> pre-training trial."""
    by_model = failures_by_pretraining(results, flags)
    rates = failure_rates(results, flags)
    answer = "; ".join(
        f"{r.pretrained}: {r.fails} fail{'s' if r.n_failed == 1 else ''} (of {r.n_finetune})"
        if r.n_failed else f"{r.pretrained}: no fine-tuning optimizer fails (of {r.n_finetune})"
        for r in by_model.itertuples())
    blocks: list = [
        Text(f"Which fine-tuning optimizers fail, per pre-trained model (rule '{chosen.label}', its threshold "
             f"per pre-trained model): {answer}."),
        Table(by_model.assign(best_score=by_model["best_score"].map(fmt), threshold=by_model["threshold"].map(fmt))
              .set_index("pretrained").astype(str),
              caption="Per pre-trained model: the fine-tuning optimizers below its threshold, and its best."),
        Table(rates.assign(failure_rate=rates["failure_rate"].map(percent))
              .set_index("pretrain_optimizer").astype(str),
              caption="Per pre-training optimizer, pooled over networks: share of fine-tuning runs that fail."),
    ]
    moved = movement(finetuned)
    if moved.empty:
        blocks.append(Text("No weight diagnostics of the fine-tuned models are in the store, so how far "
                           "fine-tuning moved each backbone is not shown (run `bocb diagnose` on the study)."))
    else:
        table = moved.pivot_table(index="pretrained", columns="optimizer", values="mean_moved", sort=False)
        blocks += [
            Text("How far fine-tuning moved the backbone: the mean over layers of ||W - W_pre||_F / "
                 "||W_pre||_F, the new classifier left out. Small numbers mean the pre-trained weights "
                 "still set the backbone."),
            Table(table.map(lambda v: fmt(v, 4)), caption="Mean relative distance from the pre-trained weights "
                  "(rows: pre-trained model; columns: fine-tuning optimizer)."),
        ]
        retention = pattern_retention(finetuned, pretrained, pre_ids)
        known = retention.dropna(subset=["retained"])
        if known.empty:
            blocks.append(Text("Pattern retention needs two or more pre-trained models of the same network "
                               "with diagnostics; this study has fewer, so it is not measured."))
        else:
            kept = int(known["retained"].sum())
            blocks += [
                Text(f"Do per-layer alpha patterns stay set by pre-training? For {kept} of {len(known)} "
                     "fine-tuned models, the layer-wise alpha profile correlates more with its own "
                     "pre-trained model than with any other pre-trained model of the same network "
                     "(Pearson r across layers, classifier excluded). With few layers and one seed this is "
                     "descriptive, not a test."),
                Table(known.assign(own=known["own"].map(fmt), best_other=known["best_other"].map(fmt),
                                   model=known["pretrained"] + " -> " + known["optimizer"])
                      .drop(columns=["pretrained", "optimizer"]).set_index("model").astype(str),
                      caption="Correlation of the per-layer alpha profile with the own and the best other "
                              "pre-trained model."),
            ]
    return Section(
        "Transfer: pre-training optimizer x fine-tuning optimizer",
        tuple(blocks),
        how_to_read="The main table above is this study's pre-train x fine-tune table: its columns are "
                    "pre-trained models (network / pre-training optimizer), its rows fine-tuning optimizers.",
        gap="The paper shows one transfer table without a rule for what 'fails' means there; this uses the "
            "same rule as pre-training, per pre-trained model.",
    )
