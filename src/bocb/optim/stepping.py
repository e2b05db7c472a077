"""One optimisation step, driven the way each optimizer needs.

Most optimizers need ``loss.backward(); optimizer.step()``. A few need more from the loop, and the
spec says which (the trainer never inspects the optimizer object):

- ``curvature == "hvp"`` (SophiaH): the backward pass keeps its graph so the optimizer can take
  Hessian-vector products.
- ``curvature == "gnb"`` (SophiaG): every ``curvature_interval`` steps, labels are sampled from the
  model's own predictive distribution and the gradient of the loss on them (the Gauss-Newton-Bartlett
  estimator of the official code) refreshes the diagonal Hessian via ``update_hessian()``; every
  step passes ``bs`` (the batch size) to ``step``.
- ``needs_train_eval`` (schedule-free): ``optimizer.train()`` before training and ``.eval()``
  before evaluation, because the weights evaluated differ from the ones the gradient is taken at.
- ``clip_grad_norm`` (Adan's ``max_grad_norm`` in its released config): the gradient's global norm
  is clipped to the smaller of the optimizer's and the recipe's clip. Both apply in the released
  setting (the recipe's OptimizerHook clips, then the optimizer clips again), and clipping to a then
  b equals clipping to min(a, b).

The same SophiaG class runs two ways: ``curvature == "gnb"`` refreshes its Hessian estimate (the real
SophiaG); ``curvature == "none"`` never does, so the estimate stays at its initial zeros and each
step is ``-lr * sign(momentum)`` after decoupled decay, which is how the authors' released code drove
it (``bocb.optim.catalog`` says why).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bocb.optim.build import OptimizerSpec


class Stepper:
    """Owns the optimizer and applies one step per :meth:`step` call."""

    def __init__(self, optimizer: torch.optim.Optimizer, spec: OptimizerSpec):
        self.optimizer = optimizer
        self.spec = spec
        self.steps = 0

    def train(self) -> None:
        if self.spec.needs_train_eval:
            self.optimizer.train()  # type: ignore[attr-defined]

    def eval(self) -> None:
        if self.spec.needs_train_eval:
            self.optimizer.eval()  # type: ignore[attr-defined]

    def step(
        self,
        forward: Callable[[], torch.Tensor],
        loss_fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        params: list[nn.Parameter] | None = None,
        clip_grad_norm: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward and update; returns the (detached) loss and logits.

        ``forward()`` runs the model on the batch (under whatever autocast the caller chose) and
        returns logits; ``loss_fn(logits)`` gives the training loss (mixup targets, label
        smoothing... are the caller's). ``clip_grad_norm`` is the recipe's clip; the gradient of
        ``params`` (default: every parameter the optimizer holds) is clipped to the smaller of it
        and the spec's own ``clip_grad_norm``, when either is set.
        """
        spec = self.spec
        if spec.curvature == "gnb" and self.steps % spec.curvature_interval == 0:
            self._refresh_gnb(forward)
        logits = forward()
        loss = loss_fn(logits)
        if spec.curvature == "hvp":
            # create_graph leaves param.grad holding a graph that references its parameter;
            # PyTorch warns about the cycle, and zero_grad(set_to_none=True) below breaks it.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
                loss.backward(create_graph=True)
        else:
            loss.backward()
        clips = [c for c in (clip_grad_norm, spec.clip_grad_norm) if c is not None]
        if clips:
            if params is None:
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, min(clips))
        if spec.curvature == "gnb":
            self.optimizer.step(bs=logits.shape[0])  # type: ignore[call-arg]
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return loss.detach(), logits.detach()

    def _refresh_gnb(self, forward: Callable[[], torch.Tensor]) -> None:
        logits = forward()
        with torch.no_grad():
            sampled = torch.distributions.Categorical(logits=logits.float()).sample()
        # Sum-free mean CE as in the official code, which scales by batch size in step(bs=...).
        F.cross_entropy(logits.float(), sampled).backward()
        self.optimizer.update_hessian()  # type: ignore[attr-defined]
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
