"""The optimizer contrast of a small study: gaps, interaction and their errors, by hand."""

import math

import pandas as pd
import pytest

from bocb.analysis import optimizer_contrast


def _frame(rows):
    return pd.DataFrame(rows, columns=["backbone", "optimizer", "lr", "top1", "seed"])


# Two settings per pair; best-tuned: R-18 SGD-M 90 / AdamW 89, DeiT-S SGD-M 60 / AdamW 72.
ONE_SEED = _frame([
    ("R-18", "SGD-M", 0.1, 90.0, 0), ("R-18", "SGD-M", 0.3, 88.0, 0),
    ("R-18", "AdamW", 1e-3, 89.0, 0), ("R-18", "AdamW", 3e-3, 87.0, 0),
    ("DeiT-S", "SGD-M", 0.1, 60.0, 0), ("DeiT-S", "SGD-M", 0.3, 55.0, 0),
    ("DeiT-S", "AdamW", 1e-3, 70.0, 0), ("DeiT-S", "AdamW", 3e-3, 72.0, 0),
])


def test_gaps_use_best_tuned_settings_and_binomial_errors():
    c = optimizer_contrast(ONE_SEED, "SGD-M", "AdamW", test_images=10_000)
    assert c.se_source == "test set"
    r18, deit = c.gap("R-18"), c.gap("DeiT-S")
    assert (r18.reference, r18.alternative, r18.gap) == (90.0, 89.0, -1.0)
    assert (deit.reference, deit.alternative, deit.gap) == (60.0, 72.0, 12.0)
    # sqrt(p(1-p)/n) in points: 0.9 -> 0.3, 0.89 -> 0.31289; in quadrature.
    assert r18.se == pytest.approx(math.hypot(0.3, 100 * math.sqrt(0.89 * 0.11 / 10_000)))
    value, se = c.interaction("DeiT-S", "R-18")
    assert value == 13.0
    assert se == pytest.approx(math.hypot(r18.se, deit.se))


def test_seed_spread_replaces_the_binomial_error_when_every_pair_has_seeds():
    rows = [(b, o, 0.1, v, s) for b, o, vals in [
        ("R-18", "SGD-M", (90.0, 92.0)), ("R-18", "AdamW", (89.0, 89.0)),
    ] for s, v in enumerate(vals)]
    c = optimizer_contrast(_frame(rows), "SGD-M", "AdamW")
    assert c.se_source == "seeds"
    # SGD-M: mean 91, std sqrt(2), se 1; AdamW: se 0.
    assert c.gap("R-18").gap == -2.0
    assert c.gap("R-18").se == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(reference="LAMB", alternative="AdamW", test_images=100), "optimizer 'LAMB' is not in the results"),
    (dict(reference="SGD-M", alternative="AdamW"), "pass test_images"),
])
def test_bad_requests_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimizer_contrast(ONE_SEED, **kwargs)


def test_backbone_run_with_one_optimizer_only_is_an_error():
    frame = pd.concat([ONE_SEED, _frame([("VGG-13", "SGD-M", 0.1, 80.0, 0)])])
    with pytest.raises(ValueError, match="'VGG-13' was not run with both"):
        optimizer_contrast(frame, "SGD-M", "AdamW", test_images=100)


def _verdict_module():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "coupling.py"
    spec = importlib.util.spec_from_file_location("bocb_bench_coupling", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("r18_adamw, deit_adamw, expected", [
    (89.8, 72.0, "shows"),          # R-18 gap -0.2 within 2 se (0.87); DeiT +12; interaction +12.2
    (89.0, 72.0, "partly"),         # R-18 prefers SGD-M by 1.0 > 2 se: a preference, still coupled
    (89.8, 60.5, "does not show"),  # DeiT +0.5 is within its 2 se (~1.4)
])
def test_coupling_verdict_from_the_gaps(r18_adamw, deit_adamw, expected):
    frame = ONE_SEED.copy()
    frame.loc[(frame.backbone == "R-18") & (frame.optimizer == "AdamW") & (frame.lr == 1e-3), "top1"] = r18_adamw
    deit = (frame.backbone == "DeiT-S") & (frame.optimizer == "AdamW")
    frame.loc[deit & (frame.lr == 3e-3), "top1"] = deit_adamw
    frame.loc[deit & (frame.lr == 1e-3), "top1"] = deit_adamw - 2  # the best stays at lr 3e-3
    contrast = optimizer_contrast(frame, "SGD-M", "AdamW", test_images=10_000)
    assert _verdict_module().verdict(contrast, "R-18", "DeiT-S")["verdict"] == expected
