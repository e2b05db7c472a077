"""Weight diagnostics in the analysis and the report: representative models, per-model summaries,
within-backbone association with CIs and verdicts, ridge plots, alpha bars, the report sections.
The end-to-end report from a real store is in tests/test_transfer.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.patches import Rectangle

from bocb.analysis import flag
from bocb.analysis.from_store import WEIGHT_COLUMNS
from bocb.report.weight_plots import alpha_bars, ridge_plot
from bocb.analysis.weights import association, model_summaries, model_table, representatives, verdict
from bocb.report.document import Plot, Table, Text
from bocb.report.weights import weights_sections

OPTIMIZERS = ("SGD", "AdamW", "LAMB", "LARS")


def _synthetic(backbones=("A", "B", "C"), optimizers=OPTIMIZERS, layers=8, seed=0, effect=0.0):
    """Results and a weights frame. Backbone i is 10 points more accurate and has alpha 1.5 higher
    than backbone i-1 (a between-backbone confound); within a backbone each later optimizer is 5
    points worse, and alpha moves by ``effect`` per 5 points of top-1 above the backbone's level."""
    rng = np.random.default_rng(seed)
    results, rows = [], []
    for bi, b in enumerate(backbones):
        for oi, o in enumerate((*optimizers, "init")):
            init = o == "init"
            tid = None if init else f"{b}-{o}"
            acc = 60 + 10 * bi - 5 * oi + rng.normal(0, 1)
            if not init:
                results.append({"optimizer": o, "backbone": b, "top1": acc, "seed": 0, "lr": 0.1,
                                "weight_decay": 0.0, "category": "a", "status": "done", "trial_id": tid})
            shift = 0.0 if init else effect * (acc - 60 - 10 * bi) / 5
            for layer in range(layers):
                rows.append({
                    "snapshot_id": f"init-{b}" if init else tid, "source": "init" if init else "final",
                    "backbone": b, "optimizer": o, "lr": None, "weight_decay": None, "seed": 0,
                    "status": None if init else "done", "trial_id": tid, "layer_index": layer,
                    "layer": f"block{layer}", "kind": "linear", "rows": 16, "cols": 16,
                    "alpha": 3 + 1.5 * bi + 0.1 * layer + shift + rng.normal(0, 0.3), "alpha_status": "ok",
                    "n_eig": 16, "n_tail": 8, "xmin": 1.0, "entropy": 4 + 0.01 * layer + rng.normal(0, 0.05),
                    "l2": 2 + layer + bi + rng.normal(0, 0.1), "pca_energy": 0.5 + rng.normal(0, 0.05),
                    "log_norm": 1.0, "log_spectral_norm": 0.5, "stable_rank": 5 + 3 * bi + rng.normal(0, 0.5),
                    "alpha_weighted": 1.0,
                })
    return pd.DataFrame(results), pd.DataFrame(rows).reindex(columns=WEIGHT_COLUMNS)


# -- analysis --------------------------------------------------------------------------------------


def test_association_finds_a_planted_within_backbone_effect():
    results, weights = _synthetic(backbones=tuple("ABCDEF"), optimizers=tuple(f"o{i}" for i in range(6)),
                                  effect=-1.0)
    flags = flag(results, "fitted")
    models = model_table(results, weights, flags)
    assert int(models["flagged"].sum()) >= 3
    a = association(models, n_resamples=500)
    alpha = a.loc["alpha_mean"]
    assert alpha["n_models"] == 36 and alpha["n_backbones"] == 6
    assert alpha["rho"] < -0.8 and alpha["rho_hi"] < 0
    assert alpha["rho_verdict"].startswith("lower in more accurate models")
    assert alpha["auc"] > 0.9 and alpha["auc_lo"] > 0.5 and alpha["diff_lo"] > 0
    assert alpha["flag_verdict"].startswith("higher in flagged models")
    assert "tentative" in alpha["flag_verdict"]  # 36 models < 40
    # Entropy carries no effect.
    assert a.loc["entropy_mean", "rho_verdict"] == "weak/none"


def test_association_without_effect_is_weak_even_with_a_between_backbone_confound():
    results, weights = _synthetic(backbones=tuple("ABCDEF"), optimizers=tuple(f"o{i}" for i in range(6)),
                                  effect=0.0)
    models = model_table(results, weights, flag(results, "fitted"))
    # Pooled raw values: alpha and top-1 both rise with the backbone, so a naive correlation is strong.
    assert models["alpha_mean"].rank().corr(models["top1"].rank()) > 0.5
    a = association(models, n_resamples=500)
    for metric in ("alpha_mean", "alpha_median", "stable_rank_mean", "log10_l2_mean"):
        assert a.loc[metric, "rho_verdict"] == "weak/none", a.loc[metric]
        assert a.loc[metric, "rho_lo"] <= 0 <= a.loc[metric, "rho_hi"] or abs(a.loc[metric, "rho"]) < 0.3
    assert a.loc["alpha_mean", "flag_verdict"] == "weak/none"


def test_association_is_seeded_and_says_too_few():
    results, weights = _synthetic(effect=-1.0)  # 3 backbones x 4 optimizers: 12 models, 3 flagged at most
    models = model_table(results, weights, flag(results, "fitted"))
    a1, a2 = association(models, n_resamples=200, seed=3), association(models, n_resamples=200, seed=3)
    pd.testing.assert_frame_equal(a1, a2)
    small = association(models.head(6), n_resamples=200)
    assert small["rho_verdict"].str.startswith("too few models").all()
    assert verdict(0.1, -0.5, 0.7, kind="auc", n=2) == "too few flagged models (2 < 3)"
    assert verdict(0.62, 0.55, 0.7, kind="auc", n=5, n_models=100) == "weak/none"  # |0.62 - 0.5| < 0.15
    assert verdict(0.9, 0.7, 1.0, kind="auc", n=5, n_models=100) == "higher in flagged models"


def test_representative_is_best_setting_seed_closest_to_its_mean():
    rows = []
    # Two settings x 4 seeds: seed 0 chooses (held-out rule) lr 0.1; seeds 1-3 = 60, 66, 70 (mean 65.3).
    for lr, values in ((0.1, (50, 60, 66, 70)), (0.01, (40, 90, 91, 92))):
        for seed, v in enumerate(values):
            rows.append({"optimizer": "X", "backbone": "B", "top1": float(v), "seed": seed, "lr": lr,
                         "weight_decay": 0.0, "trial_id": f"X-{lr}-{seed}"})
    # With the held-out rule Y's seed 0 only chooses; Y's representative is its seed 1.
    rows += [{"optimizer": "Y", "backbone": "B", "top1": v, "seed": s, "lr": 0.1, "weight_decay": 0.0,
              "trial_id": f"Y-{s}"} for s, v in ((0, 70.0), (1, 60.0))]
    results = pd.DataFrame(rows)
    reps = representatives(results).set_index("optimizer")
    assert reps.loc["X", "trial_id"] == "X-0.1-2" and reps.loc["X", "n_candidates"] == 3
    assert reps.loc["X", "pair_top1"] == pytest.approx(196 / 3) and reps.loc["X", "top1"] == 66
    assert reps.loc["Y", "trial_id"] == "Y-1"
    # One setting (all seeds count), two seeds equally far from their mean: the lower seed.
    alone = representatives(results[results["optimizer"] == "Y"])
    assert alone["trial_id"].tolist() == ["Y-0"] and alone["pair_top1"].tolist() == [65.0]
    # Only measured models are candidates: without X-0.1-2 the closest is seed 3 (70, 4.7 away).
    measured = pd.DataFrame({"source": "final", "trial_id": ["X-0.1-1", "X-0.1-3"]})
    reps = representatives(results, measured).set_index("optimizer")
    assert reps.loc["X", "trial_id"] == "X-0.1-3" and reps.loc["X", "n_candidates"] == 2
    assert reps.loc["Y", "n_candidates"] == 0 and pd.isna(reps.loc["Y", "trial_id"])


def _representatives_pair_by_pair(results: pd.DataFrame, weights: pd.DataFrame) -> pd.DataFrame:
    """The rule as stated, one pair at a time (how representatives computed it before one sort of
    all runs replaced a sort per pair)."""
    from bocb.analysis import Results
    from bocb.analysis.results import PAIR
    from bocb.analysis.weights import REP_COLUMNS

    runs = Results.of(results).runs
    runs = runs.assign(pair_top1=runs.groupby(PAIR, sort=False)["top1"].transform("mean"),
                       _measured=runs["trial_id"].isin(weights["trial_id"]))
    rows = []
    for (optimizer, backbone), group in runs.groupby(PAIR, sort=False):
        pool = group[group["_measured"]]
        row = {"optimizer": optimizer, "backbone": backbone, "trial_id": None, "seed": np.nan, "top1": np.nan,
               "pair_top1": float(group["pair_top1"].iloc[0]), "n_candidates": len(pool), "status": None}
        if len(pool):
            gap = (pool["top1"] - row["pair_top1"]).abs().round(9)
            pick = pool.assign(_gap=gap).sort_values(["_gap", "seed"], kind="stable").iloc[0]
            row.update(trial_id=pick["trial_id"], seed=pick["seed"], top1=float(pick["top1"]), status=pick["status"])
        rows.append(row)
    return pd.DataFrame(rows, columns=REP_COLUMNS)


def test_representatives_of_every_pair_at_once_are_those_chosen_pair_by_pair():
    rng = np.random.default_rng(3)
    rows = [{"optimizer": f"o{o}", "backbone": f"b{b}", "lr": lr, "weight_decay": 0.0, "seed": seed,
             # values on a coarse grid: ties in the gap to the mean, broken by seed, then by order
             "top1": float(rng.integers(50, 56)), "status": "done", "trial_id": f"{o}-{b}-{lr}-{seed}"}
            for b in range(6) for o in range(5) for lr in (0.1, 0.01) for seed in rng.permutation(4)]
    results = pd.DataFrame(rows).sample(frac=1, random_state=1)  # pairs interleaved
    measured = results[rng.random(len(results)) < 0.6][["trial_id"]].assign(source="final")
    for weights in (measured, results[["trial_id"]].assign(source="final")):
        pd.testing.assert_frame_equal(representatives(results, weights),
                                      _representatives_pair_by_pair(results, weights))
    assert (representatives(results, measured.iloc[:0])["n_candidates"] == 0).all()


def test_model_summaries_by_hand_and_all_nan_alpha():
    _, weights = _synthetic(layers=4)
    one = weights[weights["snapshot_id"] == "A-SGD"].copy()
    one["alpha"] = [1.5, 3.0, 7.0, np.nan]
    one["alpha_status"] = ["ok", "ok", "ok", "too few eigenvalues"]
    one["l2"] = [1.0, 10.0, 100.0, 1000.0]
    s = model_summaries(one).iloc[0]
    assert s["n_layers"] == 4 and s["n_alpha"] == 3
    assert s["alpha_mean"] == pytest.approx(11.5 / 3) and s["alpha_median"] == pytest.approx(3.0)
    assert s["alpha_outside"] == pytest.approx(2 / 3)
    assert s["log10_l2_mean"] == pytest.approx(1.5)
    one["alpha"], one["alpha_status"] = np.nan, "degenerate"
    s = model_summaries(one).iloc[0]
    assert s["n_alpha"] == 0 and np.isnan(s["alpha_mean"]) and np.isnan(s["alpha_outside"])


# -- figures ---------------------------------------------------------------------------------------


def _ridges(ax) -> set[str]:
    return {line.get_gid() for line in ax.get_lines() if (line.get_gid() or "").startswith("ridge:")}


def test_ridge_plot_has_one_ridge_per_optimizer_plus_init_and_marks_flagged():
    results, weights = _synthetic()
    flags = flag(results, "fitted")
    fig = ridge_plot(weights, results, flags, "B", rule_name="fitted")
    axes = fig.axes
    assert len(axes) == 4  # entropy, l2, pca_energy, alpha
    for ax in axes:
        assert _ridges(ax) == {f"ridge:{o}" for o in OPTIMIZERS} | {"ridge:init"}
    labels = axes[0].get_yticklabels()
    assert labels[0].get_text() == "random init"
    # Best on top: the last label is the most accurate optimizer of B.
    best = flags[flags["backbone"] == "B"].sort_values("top1")["optimizer"].iloc[-1]
    assert labels[-1].get_text().startswith(best)
    flagged_b = set(flags.loc[(flags["backbone"] == "B") & flags["flagged"], "optimizer"])
    assert flagged_b, "the synthetic data should flag the worst optimizer"
    red = {t.get_text().split(" ")[0] for t in labels if t.get_color() == "#d62728"}
    assert red == flagged_b
    hatched = {c.get_gid() for c in axes[0].collections if isinstance(c, PolyCollection) and c.get_hatch()}
    assert hatched == {f"ridge:{o}" for o in flagged_b}
    fig.canvas.draw()


def test_ridge_plot_draws_the_same_from_the_callers_representatives():
    results, weights = _synthetic(seed=4)
    flags = flag(results, "fitted")

    def drawn(fig) -> list:
        return [(ax.get_title(), [(line.get_gid(), line.get_xydata().tolist()) for line in ax.get_lines()],
                 [t.get_text() for t in ax.get_yticklabels()]) for ax in fig.axes]

    models = model_table(results, weights, flags)
    for backbone in ("A", "C"):
        assert drawn(ridge_plot(weights, results, flags, backbone, reps=models)) == \
            drawn(ridge_plot(weights, results, flags, backbone))


def test_ridge_plot_with_a_missing_snapshot_keeps_the_row():
    results, weights = _synthetic()
    weights = weights[weights["trial_id"] != "A-AdamW"]
    fig = ridge_plot(weights, results, flag(results, "fitted"), "A", metrics=("alpha",))
    assert _ridges(fig.axes[0]) == {"ridge:init", "ridge:SGD", "ridge:LAMB", "ridge:LARS"}
    assert any("[no snapshot]" in t.get_text() for t in fig.axes[0].get_yticklabels())


def test_alpha_bars_hatch_flagged_cells_only():
    results, weights = _synthetic()
    flags = flag(results, "fitted")
    fig = alpha_bars(weights, flags, results, rule_name="fitted")
    bars = [p for ax in fig.axes for p in ax.patches
            if isinstance(p, Rectangle) and (p.get_gid() or "").startswith("bar:")]
    assert len(bars) == 12
    hatched = {p.get_gid() for p in bars if p.get_hatch()}
    marked = flags.loc[flags["flagged"], ["optimizer", "backbone"]]
    expected = {f"bar:{b}:{o}" for o, b in marked.itertuples(index=False)}
    assert expected and hatched == expected
    # The init reference line in every panel.
    for ax in fig.axes[:3]:
        assert any(line.get_linestyle() == "--" for line in ax.get_lines())
    fig.canvas.draw()


@pytest.mark.slow
def test_alpha_bars_stay_a_readable_grid_for_20_backbones():
    names = tuple(f"B{i:02d}" for i in range(20))
    opts = tuple(f"O{i:02d}" for i in range(20))
    results, weights = _synthetic(backbones=names, optimizers=opts, layers=2)
    fig = alpha_bars(weights, flag(results, "fitted"))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 20
    width, height = fig.get_size_inches()
    assert width <= 20 and height <= 30


# -- report sections -------------------------------------------------------------------------------


def test_report_section_on_an_empty_frame_says_how_to_measure():
    results, _ = _synthetic()
    sections = weights_sections(results, pd.DataFrame(columns=WEIGHT_COLUMNS), "fitted")
    assert len(sections) == 1
    text = " ".join(b.text for b in sections[0].blocks if isinstance(b, Text))
    assert "No weight diagnostics" in text and "bocb diagnose STUDY.toml" in text


@pytest.mark.slow
def test_report_sections_handle_missing_snapshot_and_all_nan_alpha():
    results, weights = _synthetic()
    weights = weights[weights["trial_id"] != "C-LAMB"].copy()
    nan = weights["trial_id"] == "B-SGD"
    weights.loc[nan, "alpha"], weights.loc[nan, "alpha_status"] = np.nan, "degenerate"
    errors = pd.DataFrame([{"snapshot_id": "x", "source": "final", "backbone": "C", "error": "OSError: gone"}])
    sections = weights_sections(results, weights, "fitted", errors=errors, n_resamples=200)
    assert [s.title for s in sections] == ["Weight diagnostics", "Weight metrics, accuracy and failures"]
    plots = [b for b in sections[0].blocks if isinstance(b, Plot)]
    assert [p.name for p in plots] == ["weights_alpha_bars", "weights_ridge_A", "weights_ridge_B", "weights_ridge_C"]
    text = " ".join(b.text for b in sections[0].blocks if isinstance(b, Text))
    assert "11 of 12 pairs" in text and "C/LAMB" in text and "B/SGD" in text and "OSError: gone" in text
    table = next(b for b in sections[1].blocks if isinstance(b, Table)).cells
    assert len(table) == 7 and "accuracy verdict" in table.columns
    assert table.loc["mean alpha", "models"] == "10"  # 11 models, one without an alpha fit
    plain = [b.text for b in sections[1].blocks if isinstance(b, Text)][-1]
    assert plain.startswith("Plainly, with 11 models")


# The report from a real store (ridge plots and alpha bars of trained models and their random
# init) is checked end to end in tests/test_transfer.py, on the pre-training study it runs anyway.
