"""Where the running trials of a run stand: epoch, step, throughput, time left, and the run's ETA.

The runner keeps one :class:`ProgressBoard` (in :class:`bocb.runner.RunStats`): a trial is put on
it when it is submitted, its workers' progress events update it while it runs, and it comes off
the moment its result arrives, its lease is lost or the run stops, so a view drawn from the board
never lists a trial that is no longer running.

Events are the training loop's (:data:`bocb.engine.Progress`) as the local executor's workers
forward them (:class:`bocb.executors.local._Forward`): step events thinned to a couple a second,
every epoch event, each stamped with the worker's clock (``"t"``). Rates are measured between
two events of the same worker, so the runner's polling does not enter them. Executors that send
no events (Ray) leave a trial with its name and no measurement: the view shows "—" there, never
a made-up number.

Measurements (per running trial, this attempt only: a resumed trial is measured from where it
resumed):

- training throughput: images of the steps between the first and the latest step event of the
  current epoch, over the time between them (evaluation excluded: it is what a user compares
  with ``bocb train``'s and the store's ``images_per_second``);
- progress rate: schedule steps between the first and the latest step event of the attempt, over
  the wall time between them; once an epoch boundary lies in between, this includes the
  evaluation, so time left is wall time.

Time left of a trial = its schedule steps not yet done / progress rate. The run's ETA, see
:meth:`ProgressBoard.eta`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrialProgress:
    """One running trial as a view draws it. Its settings are the store's summary-row fields
    (``backbone``, ``optimizer``, ``lr``, ``weight_decay``, ``seed``, ``pretrained``; see
    :func:`bocb.labels.trial_label`); progress fields are None until a worker reported them.

    ``epoch``: the epoch in progress, from 1, of ``epochs``; ``step`` of ``steps`` within it;
    ``images_per_s``: training throughput; ``score`` and ``train_loss``: the last evaluated
    epoch's; ``seconds_left`` / ``seconds_total``: this trial's time left and whole duration at its
    measured progress rate."""

    trial_id: str
    settings: dict[str, Any]
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    images_per_s: float | None = None
    score: float | None = None
    train_loss: float | None = None
    seconds_left: float | None = None
    seconds_total: float | None = None


class _Tracked:
    """A running trial's latest facts (mutable; the board hands out frozen snapshots)."""

    def __init__(self, trial_id: str, settings: dict[str, Any]):
        self.trial_id, self.settings = trial_id, settings
        self.epoch = self.epochs = self.step = self.steps = self.batch = None
        self.row: dict[str, Any] = {}
        self.first: tuple[int, float] | None = None  # (schedule step, time) of the attempt's first step event
        self.last: tuple[int, float] | None = None
        self.epoch_first: tuple[int, int, float] | None = None  # (epoch, step, time): the epoch's first
        self.images_per_s: float | None = None

    def take(self, event: dict[str, Any]) -> None:
        self.epochs = event.get("epochs", self.epochs)
        if event.get("event") == "epoch":
            self.row = dict(event.get("row") or {})
            return
        if event.get("event") != "step":
            return
        epoch, step, steps, t = event["epoch"], event["step"], event["steps"], event.get("t")
        self.epoch, self.step, self.steps, self.batch = epoch, step, steps, event.get("batch", self.batch)
        if t is None:  # no clock, no rates: position only
            return
        at = (epoch * steps + step, t)
        self.first = self.first or at
        self.last = at
        if self.epoch_first is None or self.epoch_first[0] != epoch:
            self.epoch_first = (epoch, step, t)  # the previous epoch's throughput stands until then
        elif step > self.epoch_first[1] and t > self.epoch_first[2] and self.batch:
            self.images_per_s = (step - self.epoch_first[1]) * self.batch / (t - self.epoch_first[2])

    def snapshot(self) -> TrialProgress:
        left = total = None
        if self.first and self.last and self.epochs and self.steps:
            (s0, t0), (s1, t1) = self.first, self.last
            if s1 > s0 and t1 > t0:
                rate = (s1 - s0) / (t1 - t0)  # schedule steps per wall second
                total = self.epochs * self.steps / rate
                left = max(0.0, (self.epochs * self.steps - s1) / rate)
        return TrialProgress(
            trial_id=self.trial_id, settings=self.settings,
            epoch=None if self.epoch is None else self.epoch + 1, epochs=self.epochs, step=self.step,
            steps=self.steps, images_per_s=self.images_per_s, score=self.row.get("score"),
            train_loss=self.row.get("train_loss"), seconds_left=left, seconds_total=total)


def settings_of(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec's summary-row fields (:func:`bocb.store.base.summary_fields`), or none for a spec
    that does not have them (a test's stand-in): the trial is then named by its id."""
    from bocb.store.base import summary_fields

    try:
        return summary_fields(spec)
    except (KeyError, TypeError):
        return {}


class ProgressBoard:
    """The running trials of one runner, in the order they started (see the module doc)."""

    def __init__(self) -> None:
        self._trials: dict[str, _Tracked] = {}

    def start(self, trial_id: str, spec: dict[str, Any]) -> None:
        self._trials[trial_id] = _Tracked(trial_id, settings_of(spec))

    def update(self, trial_id: str, event: dict[str, Any]) -> None:
        """Take a worker's event; one for a trial not on the board (it has ended) is dropped."""
        tracked = self._trials.get(trial_id)
        if tracked is not None:
            tracked.take(event)

    def end(self, trial_id: str) -> None:
        self._trials.pop(trial_id, None)

    def clear(self) -> None:
        self._trials.clear()

    def __len__(self) -> int:
        return len(self._trials)

    def __contains__(self, trial_id: object) -> bool:
        return trial_id in self._trials

    def running(self) -> list[TrialProgress]:
        return [t.snapshot() for t in self._trials.values()]

    def images_per_s(self) -> float | None:
        """The running trials' training throughput together; None until one was measured."""
        rates = [t.images_per_s for t in self._trials.values() if t.images_per_s is not None]
        return sum(rates) if rates else None

    def eta(self, pending: int) -> float | None:
        """Seconds until the running trials and ``pending`` trials not yet started are done, from
        the running trials' measured progress rates; None until at least one is measured.

        With ``n`` trials running, ``r_i`` the measured ones' time left and ``D`` the mean of their
        whole durations at the rates measured (the expected length of a trial not yet measured or
        not yet started)::

            ETA = max( max_i r_i,  (sum_i r_i + (u + pending) * D) / n )

        ``u``: running trials without a measurement yet. The second term shares the work left
        among the slots working now; the first says a run cannot end before its longest running
        trial. Trials differ (backbones, epochs), so this is an estimate that improves as trials
        are measured; an adaptive study's trials not yet proposed are not counted."""
        now = self.running()
        measured = [p for p in now if p.seconds_left is not None]
        if not measured:
            return None
        mean_total = sum(p.seconds_total for p in measured) / len(measured)
        left = [p.seconds_left for p in measured]
        unmeasured = len(now) - len(measured)
        shared = (sum(left) + (unmeasured + max(0, pending)) * mean_total) / len(now)
        return max(max(left), shared)
