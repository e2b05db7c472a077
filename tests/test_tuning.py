"""Adaptive tuning without training: the lattice, reachability of the paper's settings, and the
proposal function driven by smooth synthetic objectives of (log lr, log wd)."""

import math
import random

import pytest

from bocb import paper
from bocb.registry import UnknownNameError
from bocb.study import StudyError, load_study
from bocb.tuning.policy import Observation, TuningConfig, decide
from bocb.tuning.simulate import simulate
from bocb.tuning.space import (
    DEFAULT_LR_LIMITS, DEFAULT_WD_LIMITS, TOLERANCE_DECADES, ZERO, Space, distance_decades, family_centre,
    index, pair_space, value,
)
from bocb.zoo import get_backbone_info

CONFIG = TuningConfig()
FINE = CONFIG.steps[-1]


def _bowl(lr_opt: float, wd_opt: float | None):
    """A smooth objective peaked at (lr_opt, wd_opt) in log space (wd_opt None: peak at wd 0),
    scaled by a rung-dependent factor that keeps the argmax (as training longer does)."""
    def f(lr: float, wd: float, epoch: int) -> float:
        w = math.log10(wd) if wd > 0 else -7.0
        w_opt = -7.0 if wd_opt is None else math.log10(wd_opt)
        return (90 - 8 * (math.log10(lr / lr_opt)) ** 2 - 3 * (w - w_opt) ** 2) * (epoch / 200) ** 0.25
    return f


def test_lattice_holds_the_one_two_five_series_exactly():
    assert [value(k) for k in (-30, -27, -23, -20, 0, 3, 7)] == [1e-3, 2e-3, 5e-3, 1e-2, 1.0, 2.0, 5.0]
    assert index(0.0) == ZERO and value(ZERO) == 0.0 and index(1e-8) == ZERO
    assert all(index(value(k)) == k for k in range(-70, 20))


def test_every_published_setting_is_in_its_pairs_space():
    """Tables A4/A5: 320 (lr, wd) choices; each within the lattice tolerance of a lattice point
    and inside the pair's space, whose start is that very point where the backbone is in the zoo."""
    df = paper.best_hparams()
    assert len(df) == 320
    inside = 0
    for row in df.itertuples():
        assert distance_decades(row.lr) <= TOLERANCE_DECADES, row
        assert distance_decades(row.weight_decay) <= TOLERANCE_DECADES, row
        point = (index(row.lr), index(row.weight_decay))
        try:
            get_backbone_info(row.backbone)
        except UnknownNameError:  # R-101 variants: not in the zoo; the default limits still hold them
            space = Space(point, index(DEFAULT_LR_LIMITS[0]), index(DEFAULT_LR_LIMITS[1]),
                          index(DEFAULT_WD_LIMITS[0]), index(DEFAULT_WD_LIMITS[1]), "optimizer")
        else:
            space = pair_space(row.backbone, row.optimizer)
            assert space.source == "paper" and space.start == point
        inside += space.contains(point)
    assert inside == 320


def test_from_the_family_centre_the_tuner_reaches_the_failure_cells_published_settings():
    """The hard cases of the issue: settings outside today's 5 x 5 grids. Started where a backbone
    without published values would start (its family's centre), the tuner ends within one fine step."""
    cases = [("SGD-M", "CNX-T"), ("SGDP", "Moga-S"), ("AdaBound", "DeiT-S"), ("AdaBound", "MLP-S"),
             ("LARS", "DeiT-S"), ("AdaDelta", "R-50"), ("NovoGrad", "Swin-T"), ("SGD-M", "AlexNet")]
    published = {(r.optimizer, r.backbone): (r.lr, r.weight_decay) for r in paper.best_hparams().itertuples()}
    for optimizer, backbone in cases:
        lr, wd = published[(optimizer, backbone)]
        own = pair_space(backbone, optimizer)
        centre = family_centre(optimizer, get_backbone_info(backbone).group)
        space = Space(centre, own.lr_min, own.lr_max, own.wd_min, own.wd_max, "family")
        result = simulate(space, CONFIG, 200, _bowl(lr, wd if wd > 0 else None))
        best = result.decision.best
        assert abs(best[0] - index(lr)) <= FINE, (optimizer, backbone, best, centre)
        if wd > 0:
            assert abs(best[1] - index(wd)) <= FINE, (optimizer, backbone, best, centre)
        else:
            assert best[1] == ZERO, (optimizer, backbone, best)


@pytest.mark.parametrize("lr_off, wd_off", [(0.0, 0.0), (0.37, -0.23), (1.6, 0.9), (-2.3, 1.2), (-0.8, -1.9)])
def test_synthetic_optimum_off_centre_is_found_within_one_fine_step(lr_off, wd_off):
    space = pair_space("R-50", "SGD-M")  # starts at the paper's 0.1, 1e-4
    lr_opt = value(space.start[0]) * 10**lr_off
    wd_opt = value(space.start[1]) * 10**wd_off
    result = simulate(space, CONFIG, 200, _bowl(lr_opt, wd_opt))
    d = result.decision
    assert d.done
    assert abs(math.log10(value(d.best[0]) / lr_opt)) <= FINE / 10 + 1e-9
    assert abs(math.log10(value(d.best[1]) / wd_opt)) <= FINE / 10 + 1e-9
    assert d.state in ("interior", "budget")
    grid_epochs = 25 * 200
    if (lr_off, wd_off) == (0.0, 0.0):  # optimum at the start: the cheapest case
        # 17 candidates (both stencils) to epoch 22, 5 on to 67, then the best and its four axis
        # neighbours (all among those 5 here) on to 200: a quarter of the grid's epochs.
        assert d.state == "interior" and result.rung_counts == (17, 5, 5)
        assert result.epochs == 17 * 22 + 5 * (67 - 22) + 5 * (200 - 67) <= 0.26 * grid_epochs


def test_optimum_beyond_a_hard_limit_is_reported_at_that_limit():
    space = pair_space("R-50", "SGD-M")
    result = simulate(space, TuningConfig(max_trials=200), 200, _bowl(100.0, 1e-4))  # lr limit is 10
    assert result.decision.best[0] == space.lr_max and result.decision.state == "at limit: lr max"


def test_weight_decay_zero_is_a_level_of_its_own():
    space = pair_space("R-50", "AdamW", center=(1e-3, 1e-6))
    result = simulate(space, CONFIG, 200, _bowl(1e-3, None))
    assert result.decision.best[1] == ZERO and result.decision.state == "interior"


def test_decisions_depend_on_the_results_not_on_their_order():
    space = pair_space("DeiT-S", "AdamW")
    f = _bowl(2e-3, 0.1)
    rungs = CONFIG.rung_epochs(200)
    obs = {}
    for _ in range(3):  # a few rounds of real proposals
        for point, rung in decide(space, CONFIG, obs, 200).proposals:
            obs[point] = Observation(point, rung, tuple(f(value(point[0]), value(point[1]), e) for e in rungs[:rung + 1]))
    items = list(obs.items())
    reference = decide(space, CONFIG, dict(items), 200)
    for seed in range(5):
        random.Random(seed).shuffle(items)
        assert decide(space, CONFIG, dict(items), 200) == reference


def test_pending_trials_make_the_pair_wait():
    space = pair_space("R-50", "SGD-M")
    first = decide(space, CONFIG, {}, 200)
    assert len(first.proposals) == 9 and all(r == 0 for _, r in first.proposals)
    obs = {p: Observation(p, -1, (), busy=True) for p, _ in first.proposals}
    assert decide(space, CONFIG, obs, 200).waiting


def test_rung_epochs_and_config_checks():
    assert TuningConfig().rung_epochs(200) == (22, 67, 200)
    assert TuningConfig(rungs=3).rung_epochs(3) == (1, 3)
    with pytest.raises(ValueError, match="multiple of 0.1"):
        TuningConfig(step=0.25)
    with pytest.raises(ValueError, match="eta"):
        TuningConfig(eta=1)


ADAPTIVE = """
[study]
name = "a"
data = "sample"
tier = "smoke"
tuning = "{tuning}"
{extra}

[[backbones]]
name = "R-50"

[[optimizers]]
name = "AdamW"
{opt}
"""


@pytest.mark.parametrize("tuning, extra, opt, message", [
    ("grid", "", "center = { lr = 1e-3, weight_decay = 0.05 }", "only tuning 'adaptive' takes a center"),
    ("adaptive", "", "lr = [1e-3]", "give its start as center"),
    ("adaptive", "", "center = { lr = 1e-3 }", "missing required key 'weight_decay'"),
    ("adaptive", "\n[tuning]\nspeed = 2", "", "unknown key 'speed'"),
    ("adaptive", "\n[tuning]\nlr_limits = [1.0, 0.1]", "", "0 < low < high"),
    ("adaptive", "\n[tuning]\nstep = 0.33", "", "multiple of 0.1"),
    ("adaptive", "\n[tuning]\nmax_full = 0", "", "max_full >= 1"),
    ("grid", "\n[tuning]\neta = 3", "", "only tuning 'adaptive' takes a [tuning] table"),
])
def test_adaptive_study_mistakes_are_one_line_errors(tmp_path, tuning, extra, opt, message):
    text = ADAPTIVE.format(tuning=tuning, extra="", opt=opt)
    if extra:  # [tuning] is a top-level table: after the others
        text += extra
    path = tmp_path / "a.toml"
    path.write_text(text)
    with pytest.raises(StudyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_study(path)


def test_study_center_must_lie_inside_the_limits(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text(ADAPTIVE.format(tuning="adaptive", extra="", opt="center = { lr = 100.0, weight_decay = 0.05 }"))
    from bocb.study import expand

    with pytest.raises(StudyError, match="outside the limits"):
        expand(load_study(path), 10)


def test_ties_go_to_the_start_not_to_the_lowest_setting():
    """Scores the tuner cannot tell apart (a flat objective: weight decay after one epoch, or an
    accuracy on few test images) leave the prior standing, after the start's own two stencils."""
    space = pair_space("R-50", "SGD-M")
    result = simulate(space, CONFIG, 200, lambda lr, wd, epoch: 50.0)
    assert result.decision.best == space.start and result.decision.state == "interior"
    assert result.trials == 9 + 8  # the coarse stencil, then the fine one, around the start


def test_a_trial_trained_further_elsewhere_counts_only_as_far_as_the_tuner_asked():
    """A grid study's trial (same id) is done at the full budget before the tuner asks for its
    first rung: the tuner must read it as a rung-0 result, or it would pick among settings it
    never chose to train fully."""
    from bocb.tuning.adapter import _observations

    space = pair_space("R-50", "SGD-M")
    rungs = CONFIG.rung_epochs(200)
    row = {"trial_id": "t", "seed": 0, "status": "done", "rung": 0, "lr": value(space.start[0]),
           "weight_decay": value(space.start[1])}
    scores = {("t", e): float(e) for e in rungs}
    (obs,) = _observations(None, [row], scores, rungs, 0).values()
    assert obs.reached == 0 and obs.scores == (22.0,) and not obs.final
    (obs,) = _observations(None, [dict(row, rung=2)], scores, rungs, 0).values()
    assert obs.reached == 2 and obs.final
    (obs,) = _observations(None, [dict(row, status="diverged")], {("t", 22): 5.0}, rungs, 0).values()
    assert obs.reached == 2 and obs.final and obs.scores[1:] == (-math.inf, -math.inf)


def test_a_learning_rate_that_wins_early_but_not_at_full_budget_is_not_chosen():
    """Short-horizon bias, as measured on real CIFAR-10: early in the schedule the best learning
    rate is larger than at its end (here 2x at epoch 22, 1.4x at 67). Successive halving alone
    follows the early ranking; the full-budget climb of rule 3 must end at the full-budget optimum."""
    space = pair_space("R-50", "SGD-M")
    lr_full, wd_opt = value(space.start[0]) / 2.5, value(space.start[1])

    def f(lr: float, wd: float, epoch: int) -> float:
        lr_opt = lr_full * (200 / epoch) ** 0.3
        w = math.log10(wd) if wd > 0 else -7.0
        return 90 - 8 * math.log10(lr / lr_opt) ** 2 - 3 * (w - math.log10(wd_opt)) ** 2

    d = simulate(space, CONFIG, 200, f).decision
    assert d.done and d.state == "interior"
    assert abs(math.log10(value(d.best[0]) / lr_full)) <= FINE / 10 / 2 + 1e-9, value(d.best[0])


def test_full_budget_runs_that_diverge_count_against_max_full():
    """Settings that diverge only late (here: every lr above half the start, at epoch 200) must
    not let the climb train full-budget runs beyond ``max_full``; when none finishes, the pair
    is reported diverged, not interior."""
    space = pair_space("R-50", "SGD-M")
    lr0 = value(space.start[0])

    def late_divergence(lr: float, wd: float, epoch: int) -> float:
        if epoch == 200 and lr > lr0 / 2:
            return -math.inf
        return 50.0 + math.log10(lr)  # larger lr looks better early

    result = simulate(space, TuningConfig(max_full=2), 200, late_divergence)
    assert result.rung_counts[-1] <= 2, result.rung_counts
    assert result.decision.done and result.decision.state in ("budget", "diverged"), result.decision


def test_a_rung_with_no_signal_promotes_all_its_candidates():
    """Every setting at chance after the first rung (as AlexNet x SGD-M was on CIFAR-10): halving
    by tie-break would keep the five candidates nearest the start and lose the optimum at the
    coarse stencil's corner, which the full-budget climb cannot reach within max_full."""
    space = pair_space("R-50", "SGD-M")
    corner = (space.start[0] + 5, space.start[1] + 5)
    lr_opt, wd_opt = value(corner[0]), value(corner[1])
    bowl = _bowl(lr_opt, wd_opt)

    def f(lr: float, wd: float, epoch: int) -> float:
        return 10.0 if epoch == CONFIG.rung_epochs(200)[0] else bowl(lr, wd, epoch)

    config = TuningConfig(max_full=3)
    result = simulate(space, config, 200, f)
    assert result.decision.best == corner, (result.decision, corner)
    assert result.rung_counts[1] == result.trials  # all promoted past the silent rung


def test_worst_case_cost_counts_silent_rungs():
    """By hand, rungs at epochs 22, 67, 200 (rungs 3, eta 3), max_trials 50, max_full 10:
    halving everywhere costs 50*22 + 16*45 + 5*133 = 2485; a silent rung 0 keeps all 50 at rung 1,
    then 10 (max_full) go on: 50*67 + 10*133 = 4680, the dearest pattern (silent rung 1 only:
    50*22 + 16*45 + 10*133 = 3150). The climb adds 10 full-budget trials: 2000."""
    from bocb.tuning.cost import worst_epochs

    assert CONFIG.rung_epochs(200) == (22, 67, 200)
    assert worst_epochs(CONFIG, 200) == 4680 + 2000


def test_diverging_start_and_a_silent_rung_stay_within_max_full_and_the_worst_case():
    """The reviewer's case: the start diverges and every other setting ties at rung 0, so the
    search spreads over max_trials candidates and the silent rung promotes them all; at most
    max_full may go to the full budget, and the cost stays within worst_epochs."""
    from bocb.tuning.cost import worst_epochs

    space = pair_space("R-50", "SGD-M")
    start_lr = value(space.start[0])
    bowl = _bowl(start_lr * 3, None)

    def f(lr: float, wd: float, epoch: int) -> float:
        if lr == start_lr:
            return -math.inf
        return 1.0 if epoch == 22 else bowl(lr, wd, epoch)

    result = simulate(space, CONFIG, 200, f)
    assert result.trials > 17 and result.rung_counts[1] > 17  # spread past the start's stencils, all promoted
    assert result.rung_counts[-1] <= CONFIG.max_full, result.rung_counts
    assert result.epochs <= worst_epochs(CONFIG, 200), (result.epochs, result.rung_counts)
    for f2 in (lambda lr, wd, e: 10.0, _bowl(value(space.start[0] + 9), None)):
        assert simulate(space, CONFIG, 200, f2).epochs <= worst_epochs(CONFIG, 200)
