"""How big a probe fits a time budget: epochs and images per class from a measured throughput.

The cost model (seconds, one slot):

    sum over optimizers of  epochs_o(E) * (n * C * train_s + m * C * eval_s) + launches_o(E) * launch_s

``epochs_o(E)`` and ``launches_o(E)`` are the trial-epochs and trial launches (new candidates plus
resumed promotions) of the adaptive tuner on that optimizer's search space when the optimum sits
at its start (:func:`bocb.tuning.cost.expected_run`, the estimate ``bocb plan`` gives); ``n`` / ``m``
the training / test images per class, ``C`` the classes; ``train_s`` / ``eval_s`` the measured
seconds per training / test image, ``launch_s`` the measured cost of starting a trial (building the
model, moving data) plus :data:`LAUNCH_S` for the worker itself. With ``slots`` trials at once the
sum is divided by ``slots``.

The probe plans to fill :data:`FILL` of the time left after measuring: the rest absorbs a search
that starts away from the optimum and climbs. Whatever the plan, the run stops at the deadline.

Choice, in this order (stated in the answer):

1. the most images per class from :data:`PER_CLASS_LADDER` (all, then 500, 200, 100, 50, 20) at
   which at least :data:`TARGET_EPOCHS` epochs fit, with the most epochs that fit (at most the
   paper's 200);
2. else the most images per class at which :data:`MIN_EPOCHS` epochs fit;
3. else the budget is too small: an error names the budget one pass would need.

Test images per class: as many as training images per class, between :data:`MIN_TEST_PER_CLASS`
and :data:`TEST_PER_CLASS` (every epoch is evaluated, so on a slow model a large test set would
cost more than the training it scores; 100 a class keep the noise of a CIFAR-10 accuracy near 1.5
points, 20 near 3.5), and never more than the smallest class has.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from bocb.api import PAPER_EPOCHS
from bocb.tuning.cost import expected_run
from bocb.tuning.policy import TuningConfig
from bocb.tuning.space import Space

FILL = 0.8
# A worker forked from the fork server, its data read from the cache, its record stored: 108
# launches of a tiny CNN's 3-epoch trials (training included) took 35 s on 2 idle cores.
LAUNCH_S = 0.3
PER_CLASS_LADDER: tuple[int | None, ...] = (None, 500, 200, 100, 50, 20)
TARGET_EPOCHS = 10
MIN_EPOCHS = 3
MAX_EPOCHS = PAPER_EPOCHS  # the paper's CIFAR schedule
TEST_PER_CLASS = 100
MIN_TEST_PER_CLASS = 20


@dataclass(frozen=True)
class Throughput:
    """Measured on the probe's own backbone, data and device: seconds per training image (forward,
    backward, step), per test image (forward), and to start one trial."""

    train_s: float
    eval_s: float
    launch_s: float


@dataclass(frozen=True)
class Sizing:
    """What a probe will run: ``epochs``, images per class (``train_per_class`` None: all), the
    expected seconds and trial launches, and the rule that chose them, in words."""

    epochs: int
    train_per_class: int | None
    test_per_class: int | None
    expected_s: float
    launches: int
    why: str


def probe_cost(spaces: list[Space], config: TuningConfig, epochs: int, train_images: int, test_images: int,
               speed: Throughput, slots: int = 1) -> tuple[float, int]:
    """Expected (seconds, trial launches) of tuning every space at ``epochs`` (see the module doc)."""
    seconds, launches = 0.0, 0
    per_epoch = train_images * speed.train_s + test_images * speed.eval_s
    for space in spaces:
        run = _expected(space, config, epochs)
        starts = sum(run.rung_counts)
        seconds += run.epochs * per_epoch + starts * speed.launch_s
        launches += starts
    return seconds / slots, launches


@functools.lru_cache(maxsize=4096)
def _expected(space: Space, config: TuningConfig, epochs: int):
    return expected_run(space, config, epochs)  # 0.5 ms each; sizing asks for the same ones per ladder step


def size_probe(spaces: list[Space], config: TuningConfig, seconds: float, speed: Throughput, *, classes: int,
               fewest_train: int, total_train: int, fewest_test: int, total_test: int, slots: int = 1) -> Sizing:
    """The probe that fits ``seconds`` (see the module doc); ``fewest_*``: the smallest class's images,
    ``total_*``: all images of the split. A ``ValueError`` when not even the smallest probe fits."""
    room = FILL * seconds
    ladder = [n for n in PER_CLASS_LADDER if n is None or n < fewest_train]
    fitted: list[tuple[int | None, int, float, int, int | None]] = []
    for n in ladder:
        train_images = total_train if n is None else n * classes
        m = min(TEST_PER_CLASS, max(MIN_TEST_PER_CLASS, n if n is not None else TEST_PER_CLASS))
        m_per_class = m if m < fewest_test else None
        test_images = total_test if m_per_class is None else m * classes
        best = None
        for epochs in range(MIN_EPOCHS, MAX_EPOCHS + 1):
            cost, launches = probe_cost(spaces, config, epochs, train_images, test_images, speed, slots)
            if cost > room:
                break
            best = (n, epochs, cost, launches, m_per_class)
        if best is not None:
            fitted.append(best)
            if best[1] >= TARGET_EPOCHS:
                n, epochs, cost, launches, test_per_class = best
                return Sizing(epochs, n, test_per_class, cost, launches,
                              f"the most images per class ({'all' if n is None else n}) at which at least "
                              f"{TARGET_EPOCHS} epochs fit; {epochs} epochs fit")
    if fitted:
        n, epochs, cost, launches, test_per_class = fitted[0]
        return Sizing(epochs, n, test_per_class, cost, launches,
                      f"fewer than {TARGET_EPOCHS} epochs fit even at {ladder[-1] or 'all'} images per class; "
                      f"the most images per class ({'all' if n is None else n}) at which {MIN_EPOCHS} fit")
    smallest = ladder[-1]
    need, _ = probe_cost(spaces, config, MIN_EPOCHS, total_train if smallest is None else smallest * classes,
                         min(total_test, MIN_TEST_PER_CLASS * classes), speed, slots)
    raise ValueError(f"a budget of {_clock(seconds)} is too small for this probe: {len(spaces)} optimizer(s) at "
                     f"{MIN_EPOCHS} epochs on {'all' if smallest is None else smallest} images per class need about "
                     f"{_clock(need / FILL)}; give a larger --budget or fewer --optimizers")


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
