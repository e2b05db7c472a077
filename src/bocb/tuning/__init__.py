"""Adaptive tuning: each pair's (lr, weight decay) optimum at a fraction of the grid's cost.

- :mod:`bocb.tuning.space`: the per-pair log lattice, its hard limits and its start point;
- :mod:`bocb.tuning.policy`: the pure proposal function (pattern search + successive halving);
- :mod:`bocb.tuning.simulate`: the tuner driven by a synthetic objective (tests, ``bocb plan``);
- :mod:`bocb.tuning.adapter`: the tuner against a study in the store, as ``bocb run`` calls it.

Optuna is not used. Its samplers (TPE, CMA-ES) keep their state in an Optuna storage and draw
random numbers, so to make them a pure function of bocb's store the whole study would have to be
replayed into a fresh in-memory Optuna study at every decision with a fixed seed, and the replay is
only deterministic as long as the results are replayed in the same order (TPE's model depends on
it). The issue also asks for what those samplers do not give: a lattice on which the published
settings lie, weight decay 0 as its own level, an explicit boundary rule with an interior/at-limit
verdict, and checkpoint promotions between rungs. A 3 x 3 pattern search with successive halving
is short, deterministic and does all of that, so it is written here (policy.py, ~150 lines).
"""
