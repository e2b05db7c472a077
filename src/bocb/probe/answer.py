"""A probe's answer, read from its store: the optimizer to use, those that fail, and the coupling
verdict against the paper's nearest design family. Reads the store and the paper's tables only.

Per optimizer, the chosen setting is the tuner's optimum when its search finished; when the budget
ran out first, the best candidate among those that reached the furthest epoch (its score is then
low-fidelity, and said so). An optimizer is **flagged** when its finished search ended with every
full-budget candidate diverged, or when the failure rule (:data:`bocb.analysis.failure.DEFAULT_RULE`,
the one every command uses) flags its score among at least three optimizers tuned at the full
schedule and its gap to the best exceeds the noise (:data:`SEPARATION` standard errors). Flags are
only for finished searches (a pair "fails" only when it was tuned as well as the others); an
optimizer whose trials all crashed (an error, not a divergence) is reported with its error, never
flagged: that is a fault to fix, not a coupling.

The **verdict** sets this backbone's ranking of the optimizers beside the paper's for the nearest
design family (the backbone itself when the paper has it; else the paper's backbones of its group:
:func:`bocb.analysis.recommend.evidence_backbones`): whether the best optimizer is the same, the
Spearman correlation of the two orders, and which failures the paper predicts and which it does
not. It always carries the probe's budget (epochs, images, one seed) and the test-set noise, so
that a sketch is never read as the paper's 200-epoch measurement.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bocb.api import PAPER_EPOCHS
from bocb.probe.sizing import Sizing, Throughput

# Two scores are told apart when they differ by more than this many standard errors of one score:
# 2 standard errors of their difference (sqrt(2) of one), about a 95 % two-sided test.
SEPARATION = 2 * math.sqrt(2)



@dataclass(frozen=True)
class OptimizerResult:
    """One optimizer on the probed backbone. ``score``: test top-1 (%) of the chosen setting at
    ``epoch`` (``full_budget`` when that is the schedule's last); ``state``: the tuner's word
    (``tuned, interior``, ``tuned, at limit: lr high``, ``diverged``, ``incomplete: rung 2 of 3``,
    ``not started``); ``curve``: (epoch, test top-1, train loss) of the chosen trial;
    ``paper_gap`` / ``paper_risk``: the paper's mean gap to the best (points) and failure share
    for it on the family's backbones (None when the paper did not run it)."""

    optimizer: str
    lr: float | None
    weight_decay: float | None
    score: float | None
    epoch: int | None
    full_budget: bool
    state: str
    trials: int
    trial_epochs: int
    flagged: bool
    curve: tuple[tuple[int, float | None, float | None], ...]
    paper_gap: float | None
    paper_risk: float | None


@dataclass(frozen=True)
class Verdict:
    """The coupling verdict: ``text`` in one paragraph; ``family`` the evidence it compares with;
    ``same_best`` / ``spearman`` (None with fewer than 2 / 3 optimizers compared)."""

    text: str
    family: str
    same_best: bool | None
    spearman: float | None


def pick(rows: list[dict[str, Any]], epochs_of: dict[str, list[dict[str, Any]]], full: int,
         best: tuple[float, float] | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The chosen trial of one optimizer and its epoch rows: the tuner's ``best`` (lr, wd) when it
    has one at full budget, else the best score at the furthest epoch any of its trials reached."""
    scored = [(r, epochs_of.get(r["trial_id"], [])) for r in rows]
    scored = [(r, e) for r, e in scored if e]
    if not scored:
        return None, []
    if best is not None:
        for r, e in scored:
            if math.isclose(r["lr"], best[0]) and math.isclose(r["weight_decay"] or 0.0, best[1] or 0.0) \
                    and e[-1]["epoch"] == full:
                return r, e
    furthest = max(e[-1]["epoch"] for _, e in scored)
    at = [(r, e) for r, e in scored if e[-1]["epoch"] == furthest]

    def score(item) -> float:
        value = item[1][-1]["score"]
        return -math.inf if value is None or not math.isfinite(value) else value

    return max(at, key=score)


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho (Pearson on average ranks); None with fewer than 3 pairs or no spread."""
    if len(a) < 3:
        return None
    ra, rb = pd.Series(a).rank(), pd.Series(b).rank()
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(ra.corr(rb))


def noise_points(accuracy: float | None, test_images: int) -> float | None:
    """One standard error of a test accuracy (points) from ``test_images`` images (binomial)."""
    if accuracy is None or not test_images:
        return None
    p = min(max(accuracy / 100, 0.0), 1.0)
    return 100 * math.sqrt(p * (1 - p) / test_images)


def verdict(backbone: str, results: list[OptimizerResult], family: str, noise: float | None = None) -> Verdict:
    """The verdict paragraph (see the module doc) from results that carry the paper's numbers;
    ``family`` names the paper's evidence, ``noise`` is one standard error of a score (points)."""
    compared = [r for r in results if r.full_budget and r.score is not None and math.isfinite(r.score)]
    with_paper = [r for r in compared if r.paper_gap is not None]
    if not with_paper:
        return Verdict(f"The paper has none of these optimizers on {family}: no verdict.", family, None, None)
    yours = max(with_paper, key=lambda r: r.score)
    theirs = min(with_paper, key=lambda r: r.paper_gap)
    rho = spearman([r.score for r in with_paper], [-r.paper_gap for r in with_paper])
    same: bool | None = yours.optimizer == theirs.optimizer
    parts = []
    if len(with_paper) < 2:
        parts.append(f"Only {yours.optimizer} finished the full schedule: nothing to compare yet.")
        same = None
    elif same:
        runner_up = max((r for r in with_paper if r is not yours), key=lambda r: r.score)
        close = noise is not None and yours.score - runner_up.score < SEPARATION * noise
        parts.append(f"{backbone} couples like the paper's {family}: {yours.optimizer} is the best of the "
                     f"optimizers compared, here and there"
                     + (f" (here only {yours.score - runner_up.score:.1f} points ahead of {runner_up.optimizer}, "
                        f"within the test noise)." if close else "."))
    else:
        lead = yours.score - theirs.score
        within = noise is not None and lead < SEPARATION * noise
        parts.append(f"{backbone} {'may depart' if within else 'departs'} from the paper's {family}: "
                     f"{yours.optimizer} is best here, {lead:.1f} points ahead of {theirs.optimizer}"
                     f"{' (within the test noise)' if within else ''}; the paper has {theirs.optimizer} best there, "
                     f"{yours.paper_gap - theirs.paper_gap:.1f} points ahead of {yours.optimizer}.")
    if rho is not None:
        parts.append(f"Order of the {len(with_paper)} optimizers against the paper's: Spearman rho {rho:.2f}.")
    unfinished = [r.optimizer for r in with_paper if not r.state.startswith(("tuned", "diverged", "capped"))]
    if unfinished:
        parts.append(f"{', '.join(unfinished)}: search unfinished, compared at its best full-schedule trial so far.")
    flagged_here = {r.optimizer for r in results if r.flagged}
    flagged_there = {r.optimizer for r in results if r.paper_risk is not None and r.paper_risk >= 0.5}
    if flagged_here & flagged_there:
        parts.append(f"Fails here as the paper predicts: {', '.join(sorted(flagged_here & flagged_there))}.")
    if flagged_here - flagged_there:
        parts.append(f"Fails here, unlike in the paper: {', '.join(sorted(flagged_here - flagged_there))}.")
    if flagged_there - flagged_here:
        parts.append(f"The paper flags {', '.join(sorted(flagged_there - flagged_here))} on these backbones; "
                     f"not flagged here.")
    return Verdict(" ".join(parts), family, same, rho)


def paper_view(backbone: str, optimizers: list[str]) -> tuple[dict[str, tuple[float, float]], str]:
    """The paper's (mean gap to best, failure share) per optimizer for the backbone's nearest design
    family, and words naming that evidence: ``R-50`` for a backbone the paper has, else
    ``classical CNN backbones (VGG-13, R-50, ...)`` (:func:`bocb.analysis.recommend.evidence_backbones`)."""
    from bocb import paper as paper_data
    from bocb.analysis.recommend import evidence_backbones, recommend
    from bocb.zoo import get_backbone_info

    table = paper_data.top1()[["optimizer", "backbone", "top1"]]
    chosen, _ = evidence_backbones(backbone, list(dict.fromkeys(table["backbone"])))
    ranked, _ = recommend(table, backbone)
    by = {r.optimizer: (float(r.expected_gap), float(r.failure_risk)) for r in ranked.itertuples()}
    info = get_backbone_info(backbone)
    if chosen == [info.short]:
        family = f"{info.short} results"
    else:
        family = f"{info.group} backbones ({', '.join(chosen)})"
    return {o: by[o] for o in optimizers if o in by}, family


def flag_compared(results: dict[str, tuple[float | None, bool]], noise: float | None = None) -> set[str]:
    """Optimizers flagged among those tuned to the full schedule (``results``: optimizer -> (score,
    tuned at full budget)): by the default failure rule, and only when the gap to the best exceeds
    :data:`SEPARATION` standard errors (``noise``), so that a sketch's noise is never called a failure.
    Fewer than three tuned optimizers are not judged (a rule on the spread of two numbers says nothing)."""
    from bocb.analysis.failure import DEFAULT_RULE, flag

    rows = [{"optimizer": o, "backbone": "probe", "top1": s} for o, (s, tuned) in results.items()
            if tuned and s is not None and math.isfinite(s)]
    if len(rows) < 3:
        return set()
    flags = flag(pd.DataFrame(rows), DEFAULT_RULE)
    best = max(r["top1"] for r in rows)
    margin = SEPARATION * noise if noise else 0.0
    return {r.optimizer for r in flags.itertuples() if r.flagged and best - r.top1 > margin}


@dataclass(frozen=True)
class ProbeAnswer:
    """The probe's answer. ``use``: the optimizer to use (None when nothing finished or everything
    failed); ``optimizers``: every probed optimizer, best first (flagged ones last); ``fails``: the
    flagged ones; ``judged``: whether failures could be judged (at least three optimizers tuned);
    ``complete``: every optimizer's search finished within the budget; ``caveat``: what the numbers
    are (budget, noise, selection); ``folder`` holds ``study-<key>.toml``, ``probe.sqlite``,
    ``answer.json`` and ``probe.html``."""

    backbone: str
    family: str
    data: str
    use: OptimizerResult | None
    optimizers: tuple[OptimizerResult, ...]
    fails: tuple[str, ...]
    judged: bool
    verdict: Verdict
    caveat: str
    complete: bool
    epochs: int
    train_per_class: int | None
    test_per_class: int | None
    test_images: int
    budget_s: float | None
    wall_s: float
    sizing: str
    throughput: Throughput | None
    folder: Path
    study: Path
    store: Path
    html: Path | None = None

    def to_json(self) -> str:
        """Strict JSON (NaN and infinities as null; paths as text)."""
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            return value

        return json.dumps(clean(dataclasses.asdict(self)), allow_nan=False)


def _state_words(state: Any, rows: list[dict[str, Any]]) -> str:
    """The search's state in words; an optimizer whose every trial crashed shows the first error."""
    from bocb.tuning.adapter import describe

    if rows and all(r["status"] == "failed" for r in rows):
        return f"crashed: {next((r['error'] for r in rows if r['error']), 'no error recorded')}"
    if state.decision.done:
        return {"diverged": "diverged", "budget": "capped before its optimum was confirmed"}.get(
            state.decision.state, f"tuned, {state.decision.state}")
    return "incomplete: " + describe(state)


def read_answer(study_path: Path, store_path: Path, folder: Path, plan: Sizing, speed: Throughput | None,
                budget_s: float | None, data: str, wall_s: float, test_images: int) -> ProbeAnswer:
    """The answer from the probe's store (see the module doc); ``test_images``: the test images
    behind each score (for the noise it carries)."""
    from bocb.store import open_existing
    from bocb.study import load_study
    from bocb.tuning.adapter import states
    from bocb.zoo import get_backbone_info

    study = load_study(study_path)
    info = get_backbone_info(study.backbones[0]["name"])
    with open_existing(str(store_path)) as store:
        pair_states = {s.optimizer: s for s in states(store, study)}
        rows = store.trials(study.study_id)
        epochs_of = {r["trial_id"]: store.epochs(r["trial_id"]) for r in rows}
    names = [o["name"] for o in study.optimizers]
    paper, family = paper_view(info.name, names)
    mine = {n: [r for r in rows if r["optimizer"] == n] for n in names}
    chosen: dict[str, tuple[dict | None, list[dict]]] = {}
    scores: dict[str, tuple[float | None, bool]] = {}
    for name in names:
        state = pair_states[name]
        best = (state.best_lr, state.best_wd) if state.decision.done and state.best_lr is not None else None
        chosen[name] = row, curve = pick(mine[name], epochs_of, plan.epochs, best)
        score = curve[-1]["score"] if curve else None
        scores[name] = (score if score is None or math.isfinite(score) else None,
                        bool(curve) and curve[-1]["epoch"] == plan.epochs)
    full_scores = [s for s, full in scores.values() if full and s is not None]
    noise = noise_points(max(full_scores), test_images) if full_scores else None
    words = {n: _state_words(pair_states[n], mine[n]) for n in names}
    tuned = {n: words[n].startswith(("tuned", "capped")) for n in names}
    judged = sum(1 for n in names if tuned[n] and scores[n][1] and scores[n][0] is not None) >= 3
    flagged = flag_compared({n: (s, full and tuned[n]) for n, (s, full) in scores.items()}, noise)
    flagged |= {n for n in names if words[n] == "diverged"}
    results = []
    for name in names:
        state, (row, curve), (score, full) = pair_states[name], chosen[name], scores[name]
        results.append(OptimizerResult(
            optimizer=name, lr=row["lr"] if row else None, weight_decay=(row["weight_decay"] or 0.0) if row else None,
            score=score, epoch=curve[-1]["epoch"] if curve else None, full_budget=full, state=words[name],
            trials=state.trials, trial_epochs=state.epochs, flagged=name in flagged,
            curve=tuple((e["epoch"], e["score"], e["train_loss"]) for e in curve),
            paper_gap=paper[name][0] if name in paper else None, paper_risk=paper[name][1] if name in paper else None,
        ))
    order = sorted(results, key=lambda r: (r.flagged, not r.full_budget, -(r.score if r.score is not None else -1e9)))
    use = next((r for r in order if not r.flagged and r.score is not None), None)
    complete = all(pair_states[n].decision.done for n in names)
    caveat = (f"A sketch, not the paper's measurement: {plan.epochs} epochs (the paper: {PAPER_EPOCHS}), "
              f"{'all' if plan.train_per_class is None else plan.train_per_class} training images per class, one seed; "
              f"each setting was chosen on the test set (the paper's way), so the best scores lean optimistic"
              + (f"; test accuracy carries about ±{noise:.1f} points of noise ({test_images} test images), so "
                 f"optimizers closer than {SEPARATION * noise:.1f} points are not told apart" if noise else "")
              + ("" if complete else "; the budget ran out before every search finished: the same command continues it"))
    return ProbeAnswer(
        backbone=info.short, family=info.group, data=data, use=use, optimizers=tuple(order),
        fails=tuple(r.optimizer for r in order if r.flagged), judged=judged,
        verdict=verdict(info.short, results, family, noise), caveat=caveat, complete=complete, epochs=plan.epochs,
        train_per_class=plan.train_per_class, test_per_class=plan.test_per_class, test_images=test_images,
        budget_s=budget_s, wall_s=wall_s, sizing=plan.why, throughput=speed, folder=folder, study=study_path,
        store=store_path,
    )
