"""The BOCB analysis: pure functions from result frames to statistics (accuracy and failure marks,
coupling, hyper-parameter robustness, the optimizer ranking).

Input everywhere: a long frame with ``optimizer``, ``backbone``, ``top1`` and optionally ``seed``,
``lr``, ``weight_decay``, ``category`` (:func:`load_results` checks it). Pairs run at several
settings are reduced to their best-tuned setting, seeds to their mean, by the statistics themselves.

- :mod:`~bocb.analysis.results`: loading, best-tuned selection, pair means, the wide table.
- :mod:`~bocb.analysis.failure`: the failure rule (Eq. 1, literal and fitted) and :func:`flag`.
- :mod:`~bocb.analysis.summary`: per-backbone mean, std, range, top-4.
- :mod:`~bocb.analysis.coupling`: the additive model, interaction residuals, variance shares,
  coupling and generality scores.
- :mod:`~bocb.analysis.ranks`: Kendall tau-b, Spearman, agreement of optimizer orderings.
- :mod:`~bocb.analysis.bootstrap`: percentile CIs over seeds for any table statistic.
- :mod:`~bocb.analysis.robustness`: usual settings (modes) and distances in decades, no grid.
- :mod:`~bocb.analysis.ranking`: the 40/20/20/20 optimizer ranking (variants paper, continuous).
- :mod:`~bocb.analysis.contrast`: two optimizers' gap per backbone and its difference, with errors.

Nothing here plots, prints or reads the command line.
"""

from bocb.analysis.bootstrap import N_RESAMPLES, bootstrap, resampled_tables
from bocb.analysis.contrast import Contrast, Gap, optimizer_contrast
from bocb.analysis.coupling import (
    METHODS,
    AdditiveFit,
    coupling_scores,
    coupling_statistics,
    fit_additive,
    generality_scores,
    variance_shares,
)
from bocb.analysis.failure import DEFAULT_RULE, RULES, FailureRule, compare_with_marks, flag, flag_table, rule
from bocb.analysis.ranking import VARIANTS, WEIGHTS, cost_table, performance_scores, rank_optimizers
from bocb.analysis.ranks import (
    kendall_tau_b,
    mean_off_diagonal,
    order_agreement,
    ranking_agreement,
    spearman_rho,
)
from bocb.analysis.results import Results, best_tuned, has_replicates, load_results, pair_means, to_long, wide
from bocb.analysis.robustness import (
    best_settings,
    distance_summary,
    hparam_distances,
    level_distance,
    reading_agreement,
    usual_value,
)
from bocb.analysis.summary import backbone_summary, paper_round

__all__ = [
    "DEFAULT_RULE",
    "METHODS",
    "N_RESAMPLES",
    "RULES",
    "VARIANTS",
    "WEIGHTS",
    "AdditiveFit",
    "Contrast",
    "Gap",
    "FailureRule",
    "Results",
    "backbone_summary",
    "best_settings",
    "best_tuned",
    "bootstrap",
    "compare_with_marks",
    "cost_table",
    "coupling_scores",
    "coupling_statistics",
    "distance_summary",
    "fit_additive",
    "flag",
    "flag_table",
    "generality_scores",
    "has_replicates",
    "hparam_distances",
    "kendall_tau_b",
    "level_distance",
    "load_results",
    "mean_off_diagonal",
    "optimizer_contrast",
    "order_agreement",
    "pair_means",
    "paper_round",
    "performance_scores",
    "rank_optimizers",
    "ranking_agreement",
    "reading_agreement",
    "resampled_tables",
    "rule",
    "spearman_rho",
    "to_long",
    "usual_value",
    "variance_shares",
    "wide",
]
