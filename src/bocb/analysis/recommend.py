"""Which optimizers to try first for a backbone (or a design family), and how likely each fails.

Evidence is a results frame (the paper's Table 1, a study's results, or both stacked). The query
selects the evidence backbones:

- a backbone that has results: that backbone alone;
- a zoo backbone without results: the backbones with results that share its design (same group,
  else same stage design + token mixer), named in the answer — "one like it";
- a design family: every backbone with results whose group, stage design, block or token mixer
  contains the words (e.g. "classical CNN", "hierarchical attention"); free words work too:
  filler such as "vision", "network" or "model" is dropped and common names are mapped to the
  taxonomy's (:data:`SYNONYMS`: "ViT" -> transformer, "convolutional" -> conv), so "vision
  transformer" means the transformer group.

Per optimizer, over the evidence backbones: the mean gap to each backbone's best top-1, its
spread, and the failure risk = share of those backbones on which the failure rule flags it. With
a single backbone the risk is 0 or 1; the answer says how many backbones it rests on.
"""

from __future__ import annotations

import pandas as pd

from bocb.analysis.failure import flag
from bocb.analysis.results import Results
from bocb.analysis.robustness import ZERO_WD, usual_value


YOURS = " (yours)"  # the suffix api.recommend gives a store's backbones next to the paper's


def _base(short: str) -> str:
    return short.removesuffix(YOURS)


# Free design words: filler that names no design is dropped, and common names are mapped to the
# taxonomy's words (group, stages, block, token mixer), so "vision transformer", "a ViT-like model"
# or "convolutional network" find the backbones they mean.
FILLER = frozenset({"a", "an", "the", "like", "style", "based", "vision", "visual", "network", "networks", "net",
                    "model", "models", "backbone", "backbones", "neural", "deep", "architecture"})
SYNONYMS = {"vit": "transformer", "vits": "transformer", "convnet": "cnn", "convnets": "cnn", "convolutional": "conv",
            "convolution": "conv", "convolutions": "conv", "depthwise": "dw", "windowed": "window", "mixer": "mlp"}


def _words(text: str) -> list[str]:
    words = text.lower().replace("-", " ").replace("_", " ").split()
    return list(dict.fromkeys(SYNONYMS.get(w, w) for w in words if w and w not in FILLER))


def evidence_backbones(query: str, available: list[str]) -> tuple[list[str], str]:
    """The backbones (short names present in the results) that answer ``query``, and why.

    A store's backbone shown next to the paper's (``"R-50 (yours)"``) counts as that backbone: with
    both kinds of evidence, a backbone's own results are the paper's and yours (weighted by the caller:
    :func:`bocb.api.recommend` weighs yours by their schedule)."""
    from bocb.registry import UnknownNameError
    from bocb.zoo import BACKBONES

    def info_of(short: str):
        try:
            return BACKBONES.get(_base(short))
        except (KeyError, ValueError):
            return None

    infos = {s: info_of(s) for s in available}
    infos = {s: i for s, i in infos.items() if i is not None}
    if query in BACKBONES:
        info = BACKBONES.get(query)
        own = [s for s in available if s in infos and infos[s].short == info.short]
        if own:
            both = " (the paper's and yours)" if len(own) > 1 else ""
            return own, f"results for {info.short} itself{both}"
        same_group = [s for s in infos if infos[s].group == info.group]
        if same_group:
            return same_group, f"no results for {info.short}; backbones of the same group ({info.group})"
        alike = [s for s in infos if (infos[s].stages, infos[s].token_mixer) == (info.stages, info.token_mixer)]
        if alike:
            return alike, f"no results for {info.short}; backbones with the same stages and token mixer"
        raise ValueError(f"no results for {info.short} or any backbone like it ({info.group}, {info.stages}, {info.token_mixer})")
    words = _words(query)
    if not words:
        raise ValueError(f"{query!r} names no design: give a backbone or design words such as 'classical CNN', "
                         f"'vision transformer', 'hierarchical attention'")
    matched = []
    for short, b in infos.items():
        text = " ".join([b.group, b.stages, b.block, b.token_mixer, b.model]).lower().replace("-", " ")
        if all(w in text or (w.endswith("s") and w[:-1] in text) for w in words):
            matched.append(short)
    if not matched:
        try:
            BACKBONES.get(query)
        except UnknownNameError as err:
            groups = sorted({b.group for b in infos.values()})
            raise ValueError(f"{query!r} is neither a backbone nor a design family with results: "
                             f"{err}; families: {', '.join(groups)}") from None
    return matched, f"backbones matching the design words {words}"


def recommend(results: pd.DataFrame, query: str, failure_rule: str | None = None, gamma: float | None = None,
              settings: pd.DataFrame | None = None,
              weights: dict[str, float] | None = None) -> tuple[pd.DataFrame, str]:
    """Ranked optimizers for ``query`` and a sentence naming the evidence.

    ``failure_rule``/``gamma``: :func:`bocb.analysis.failure.rule` (None: the shared
    :data:`~bocb.analysis.failure.DEFAULT_RULE`); the sentence names the rule used.

    Columns: optimizer, expected_gap (mean points below the best), gap_std, failure_risk (0-1),
    backbones (how many), and lr / weight_decay (the usual setting: the mode over the evidence
    backbones in ``settings`` when given, as :func:`bocb.analysis.robustness.usual_value` defines
    it, with no weight decay (<= 1e-8) reported as 0; else the zoo's grid centre).

    ``weights``: backbone -> weight of its evidence (default 1 each); with weights the gap and the
    failure share are weighted means over the evidence backbones and the gap's spread their
    unbiased weighted standard deviation (reliability weights; the sample std when all are 1).
    """
    from bocb.analysis.failure import rule

    frame = Results.of(results)
    used = rule(failure_rule, gamma)
    flags = flag(frame, used)
    chosen, why = evidence_backbones(query, list(dict.fromkeys(flags["backbone"])))
    part = flags[flags["backbone"].isin(chosen)].copy()
    part["gap"] = part.groupby("backbone")["top1"].transform("max") - part["top1"]
    if weights:
        # Weighted over the evidence backbones (a short-run store sketch counts less than a paper
        # cell): weighted mean gap and failure share, and the weighted spread of the gap.
        part["w"] = part["backbone"].map(lambda b: float(weights.get(b, 1.0)))
        part["wgap"], part["wflag"] = part["w"] * part["gap"], part["w"] * part["flagged"].astype(float)
        grouped = part.groupby("optimizer", sort=False)
        total = grouped["w"].sum()
        mean = grouped["wgap"].sum() / total
        part["wdev"] = part["w"] * (part["gap"] - part["optimizer"].map(mean)) ** 2
        part["w2"] = part["w"] ** 2
        # Reliability weights, unbiased: sum w (x - mean)^2 / (V1 - V2 / V1); with every weight 1
        # this is the sample variance (ddof 1) of the unweighted branch.
        dof = total - part.groupby("optimizer", sort=False)["w2"].sum() / total
        spread = (part.groupby("optimizer", sort=False)["wdev"].sum() / dof.where(dof > 0)) ** 0.5
        out = pd.DataFrame({"expected_gap": mean, "gap_std": spread,
                            "failure_risk": grouped["wflag"].sum() / total,
                            "backbones": grouped["backbone"].nunique()}).reset_index()
    else:
        out = part.groupby("optimizer", sort=False).agg(
            expected_gap=("gap", "mean"), gap_std=("gap", "std"), failure_risk=("flagged", "mean"),
            backbones=("backbone", "nunique"),
        ).reset_index()
    out["gap_std"] = out["gap_std"].fillna(0.0)
    lr, wd = [], []
    for opt in out["optimizer"]:
        usual = None
        if settings is not None:
            rows = settings[(settings["optimizer"] == opt) & settings["backbone"].isin(chosen)]
            if len(rows):
                # The same "usual setting" as the robustness analysis: mode over the chosen values.
                usual = (usual_value(rows["lr"].tolist()),
                         usual_value(rows["weight_decay"].fillna(0.0).tolist(), ZERO_WD))
        if usual is None:
            try:
                from bocb.optim import get_optimizer_info

                info = get_optimizer_info(opt)
                usual = (info.lr, info.weight_decay)
            except KeyError:
                usual = (float("nan"), float("nan"))
        lr.append(usual[0])
        wd.append(usual[1])
    out["lr"], out["weight_decay"] = lr, wd
    out = out.sort_values(["failure_risk", "expected_gap"]).reset_index(drop=True)
    evidence = (f"{why}: {', '.join(chosen)} ({len(chosen)} backbone{'s' if len(chosen) != 1 else ''}); "
                f"failure rule '{used.label}'")
    return out, evidence
