"""The optimizer zoo: the paper's 20 optimizers, in its four categories
(a: fixed lr with momentum; b: adaptive lr with momentum; c: estimated lr with momentum, from other
statistics; d: adaptive lr without momentum), and extras.

Every entry points at a class in a maintained library; none is implemented in bocb. Where libraries
overlap, timm is preferred over pytorch-optimizer (timm is already the model dependency), torch.optim
over both. SophiaG, the Sophia variant the paper used, is in neither timm nor pytorch-optimizer
(which has only SophiaH); it comes from ``sophia-opt``, the official implementation packaged.

The knobs follow the authors' released configs wherever they fix one (Westlake-AI/openmixup
``configs/classification/cifar100/optimizers/basic/r50_CE_none_bs100_<optimizer>_ep200.py`` and the
optimizer classes in ``openmixup/core/optimizers/``; the same files ship in
Westlake-AI/Backbone-vs-Optimizer under ``openmixup/``). :mod:`bocb.optim.claims` lists every such
value with its file, and says where bocb differs. In short:

- Weight-decay rule of the ``paper`` policy (``paper_wd_policy``): SGD-M, Adam, AdamP, AdaBelief and
  AdaFactor decay every parameter in their configs, AdamW, LAMB and Adan exclude norms and biases.
  Without a released config, the closest released analogue decides: optimizers with coupled L2
  decay (SGDP like SGD-M; Adamax, NAdam, RAdam, AdaBound like Adam; AdaGrad, AdaDelta, RMSProp,
  plain torch.optim like SGD and Adam) decay everything; those with decoupled or layer-wise decay
  (LION and Sophia like AdamW, NovoGrad like LAMB) exclude norms and biases, as does LARS, whose
  released configs (self-supervised ones) exclude norms and biases from decay and from adaptation.
- AdaBelief: eps 1e-8 as its config (timm's default is 1e-16).
- AdaFactor: no first moment (``betas=None``), as its config; ``scale_parameter`` stays True as
  there (it acts only under the relative-step schedule, which an explicit lr turns off).
- Adan: the config clips the global gradient norm at 5 (``max_grad_norm=5.0``); timm's Adan has no
  such argument, so ``clip_grad_norm=5.0`` makes the Stepper clip (see :mod:`bocb.optim.stepping`).
- LARS: the trust ratio applies at every weight decay (timm's ``always_adapt=True``) and never to
  norms and biases (``always_adapt=False`` on their group), as in You et al. and the released LARS
  configs' ``lars_exclude``. timm adapts only when a group's decay is non-zero, which made LARS at
  the paper's weight decay 0 (ConvNeXt-T, MogaNet-S) exactly SGD-M. The released class itself
  adapts only with ``none_zero=True``, which no released config sets; the paper's LARS configs are
  not released, so its learning rates (about 1 with decay, 0.06 at decay 0) are the only evidence.
- Sophia: the released code registers SophiaG but nothing calls ``update_hessian()``, so its
  Hessian estimate stays zero and every step is ``-lr * sign(momentum)`` after decoupled decay: a
  clipped sign-of-momentum update. That is inferred from the released code, not stated by the paper.
  The paper's row ``sophia`` reproduces it (``curvature="none"``), because a study of the paper
  must measure what produced the paper's numbers and grid centres (its Sophia learning rates, around
  1e-4, sit where LION's do, as a sign update's would). The real SophiaG, refreshing a
  Gauss-Newton-Bartlett Hessian every 10 steps, is the extra ``sophia_g``; the class is the same.

``lr`` / ``weight_decay`` are grid centres: the mode, over backbones, of the values the paper chose
(Tables A4/A5, snapped to the 1-2-5 series; 1e-8 counts as 0, the paper's spelling of "no decay";
ties go to the value nearer the median). ``tests/test_optimizers.py`` re-derives them from the
shipped tables. Extras use their authors' recommended defaults.

``fixed`` holds the knobs bocb sets on purpose; everything else stays the class default and is
written out in full in each run's record. Choices the paper does not state:
- SGDP uses the same momentum 0.9 without Nesterov as SGD-M, so the two differ only in the projection.
- AdaBound decays weights as L2 (``weight_decouple=False``), as in Luo et al.; pytorch-optimizer's
  default is decoupled.
- AdaFactor takes the grid's learning rate as given (the relative-step schedule is off whenever an
  lr is passed). The paper counts it among the optimizers "with momentum", but its released config
  has no first moment, and bocb follows the config.
- RMSProp runs without momentum, as category (d) requires.
- Muon uses timm's ``match_rms_adamw`` scaling, so its lr lives on AdamW's scale; non-matrix
  parameters and the classifier head take timm's built-in AdamW fallback.
"""

from __future__ import annotations

from bocb.optim.info import OptimizerInfo, register_optimizer

ADAM_BETAS = (0.9, 0.999)
# The released SophiaG's defaults (openmixup/core/optimizers/sophia.py), which its configs keep.
SOPHIA_FIXED = {"betas": (0.965, 0.99), "rho": 0.04}

_PAPER = [
    # (a) fixed learning rate with momentum
    OptimizerInfo(
        "sgd_m", "SGD-M", "a", "torch.optim:SGD", lr=0.1, weight_decay=1e-4,
        fixed={"momentum": 0.9, "nesterov": False}, wd_style="l2", paper_wd_policy="decay_all",
        summary="SGD with heavy-ball momentum", reference="Robbins & Monro 1951; Polyak 1964",
    ),
    OptimizerInfo(
        "sgdp", "SGDP", "a", "timm.optim:SGDP", lr=0.1, weight_decay=1e-4,
        fixed={"momentum": 0.9, "nesterov": False}, wd_style="l2", paper_wd_policy="decay_all",
        summary="SGD with projection of the radial component for scale-invariant weights",
        reference="Heo et al., AdamP, ICLR 2021",
    ),
    OptimizerInfo(
        "lion", "LION", "a", "timm.optim:Lion", lr=1e-4, weight_decay=0.0,
        fixed={"betas": (0.9, 0.99)}, wd_style="decoupled", paper_wd_policy="no_decay_1d",
        summary="sign of interpolated momentum", reference="Chen et al., Symbolic Discovery, NeurIPS 2023",
    ),
    # (b) adaptive learning rate with momentum
    OptimizerInfo(
        "adam", "Adam", "b", "torch.optim:Adam", lr=5e-4, weight_decay=0.0,
        fixed={"betas": ADAM_BETAS, "eps": 1e-8}, paper_wd_policy="decay_all", summary="Adam with L2 decay",
        reference="Kingma & Ba, ICLR 2015",
    ),
    OptimizerInfo(
        "adamax", "Adamax", "b", "torch.optim:Adamax", lr=1e-3, weight_decay=1e-4,
        fixed={"betas": ADAM_BETAS, "eps": 1e-8}, paper_wd_policy="decay_all",
        summary="Adam with the infinity norm",
        reference="Kingma & Ba, ICLR 2015",
    ),
    OptimizerInfo(
        "nadam", "NAdam", "b", "torch.optim:NAdam", lr=5e-4, weight_decay=0.0,
        fixed={"betas": ADAM_BETAS, "eps": 1e-8}, paper_wd_policy="decay_all",
        summary="Adam with Nesterov momentum",
        reference="Dozat, ICLR workshop 2016",
    ),
    OptimizerInfo(
        "adamw", "AdamW", "b", "torch.optim:AdamW", lr=5e-4, weight_decay=0.05,
        fixed={"betas": ADAM_BETAS, "eps": 1e-8}, wd_style="decoupled", paper_wd_policy="no_decay_1d",
        summary="Adam with decoupled weight decay", reference="Loshchilov & Hutter, ICLR 2019",
    ),
    OptimizerInfo(
        "lamb", "LAMB", "b", "timm.optim:Lamb", lr=5e-3, weight_decay=0.05,
        fixed={"betas": ADAM_BETAS, "eps": 1e-6}, wd_style="trust-ratio", paper_wd_policy="no_decay_1d",
        summary="layer-wise trust ratio on the Adam update (timm clips the global grad norm at 1)",
        reference="You et al., ICLR 2020",
    ),
    OptimizerInfo(
        "radam", "RAdam", "b", "torch.optim:RAdam", lr=1e-3, weight_decay=0.0,
        fixed={"betas": ADAM_BETAS, "eps": 1e-8}, paper_wd_policy="decay_all",
        summary="Adam with variance rectification",
        reference="Liu et al., ICLR 2020",
    ),
    OptimizerInfo(
        "adamp", "AdamP", "b", "timm.optim:AdamP", lr=1e-3, weight_decay=0.05,
        fixed={"betas": ADAM_BETAS, "eps": 1e-8}, wd_style="l2", paper_wd_policy="decay_all",
        summary="Adam with projection for scale-invariant weights", reference="Heo et al., ICLR 2021",
    ),
    OptimizerInfo(
        "adan", "Adan", "b", "timm.optim:Adan", lr=2e-3, weight_decay=0.05,
        fixed={"betas": (0.98, 0.92, 0.99), "eps": 1e-8}, wd_style="decoupled", paper_wd_policy="no_decay_1d",
        clip_grad_norm=5.0, summary="adaptive Nesterov momentum (global grad norm clipped at 5)", reference="Xie et al., TPAMI 2024",
    ),
    # (c) estimated learning rate with momentum
    OptimizerInfo(
        "adabelief", "AdaBelief", "c", "timm.optim:AdaBelief", lr=5e-3, weight_decay=0.01,
        fixed={"betas": ADAM_BETAS, "eps": 1e-8}, wd_style="decoupled", paper_wd_policy="decay_all",
        summary="step size from the belief in the gradient", reference="Zhuang et al., NeurIPS 2020",
    ),
    OptimizerInfo(
        "adabound", "AdaBound", "c", "pytorch_optimizer:AdaBound", lr=5e-4, weight_decay=0.0,
        fixed={"betas": ADAM_BETAS, "final_lr": 0.1, "gamma": 1e-3, "weight_decouple": False},
        paper_wd_policy="decay_all", summary="Adam with dynamic bounds converging to SGD", reference="Luo et al., ICLR 2019",
    ),
    OptimizerInfo(
        "adafactor", "AdaFactor", "c", "timm.optim:Adafactor", lr=5e-4, weight_decay=0.01,
        fixed={"betas": None}, wd_style="decoupled", paper_wd_policy="decay_all",
        summary="factorised second moment, no first moment", reference="Shazeer & Stern, ICML 2018",
    ),
    OptimizerInfo(
        "lars", "LARS", "c", "timm.optim:Lars", lr=1.0, weight_decay=1e-6,
        fixed={"momentum": 0.9, "trust_coeff": 1e-3, "always_adapt": True}, wd_style="trust-ratio",
        paper_wd_policy="no_decay_1d", exempt_options={"always_adapt": False},
        summary="layer-wise trust ratio on SGD, at any weight decay; norms and biases not adapted",
        reference="You et al., arXiv 1708.03888",
    ),
    OptimizerInfo(
        "novograd", "NovoGrad", "c", "timm.optim:NvNovoGrad", lr=2e-3, weight_decay=0.01,
        fixed={"betas": (0.95, 0.98)}, paper_wd_policy="no_decay_1d",
        summary="layer-wise second moment",
        reference="Ginsburg et al., arXiv 1905.11286",
    ),
    OptimizerInfo(
        "sophia", "Sophia", "c", "sophia_opt:SophiaG", lr=1e-4, weight_decay=0.1,
        fixed=SOPHIA_FIXED, wd_style="decoupled", curvature="none", paper_wd_policy="no_decay_1d",
        summary="SophiaG as the released code ran it: Hessian never refreshed, so -lr*sign(momentum)",
        reference="Liu et al., ICLR 2024",
    ),
    # (d) adaptive learning rate without momentum
    OptimizerInfo(
        "adagrad", "AdaGrad", "d", "torch.optim:Adagrad", lr=5e-4, weight_decay=0.0,
        paper_wd_policy="decay_all", summary="accumulated squared gradients", reference="Duchi et al., JMLR 2011",
    ),
    OptimizerInfo(
        "adadelta", "AdaDelta", "d", "torch.optim:Adadelta", lr=2.0, weight_decay=0.0,
        fixed={"rho": 0.9}, paper_wd_policy="decay_all", summary="windowed AdaGrad with unit correction",
        reference="Zeiler, arXiv 1212.5701",
    ),
    OptimizerInfo(
        "rmsprop", "RMSProp", "d", "torch.optim:RMSprop", lr=5e-4, weight_decay=0.0,
        fixed={"alpha": 0.99, "momentum": 0.0}, paper_wd_policy="decay_all", summary="running mean of squared gradients",
        reference="Tieleman & Hinton, 2012",
    ),
]

_EXTRAS = [
    OptimizerInfo(
        "muon", "Muon", "extra", "timm.optim:Muon", lr=1e-3, weight_decay=0.05,
        fixed={"momentum": 0.95, "nesterov": True, "adjust_lr_fn": "match_rms_adamw"},
        wd_style="decoupled", matrix_fallback=True, paper=False,
        summary="orthogonalised momentum (Newton-Schulz) with AdamW for non-matrix params",
        reference="Jordan et al. 2024; Liu et al., arXiv 2502.16982",
    ),
    OptimizerInfo(
        "sf_adamw", "SF-AdamW", "extra", "schedulefree:AdamWScheduleFree", lr=2e-3,
        weight_decay=0.05, fixed={"betas": ADAM_BETAS}, wd_style="decoupled",
        needs_train_eval=True, paper=False,
        summary="schedule-free AdamW (needs optimizer.train()/eval())",
        reference="Defazio et al., NeurIPS 2024",
    ),
    OptimizerInfo(
        "prodigy", "Prodigy", "extra", "pytorch_optimizer:Prodigy", lr=1.0, weight_decay=0.05,
        fixed={"betas": ADAM_BETAS}, wd_style="decoupled", paper=False,
        summary="learning-rate-free Adam (distance estimate; lr is a multiplier)",
        reference="Mishchenko & Defazio, ICML 2024",
    ),
    OptimizerInfo(
        "soap", "SOAP", "extra", "pytorch_optimizer:SOAP", lr=2e-3, weight_decay=0.01,
        fixed={"betas": (0.95, 0.95), "precondition_frequency": 10}, wd_style="decoupled",
        paper=False, summary="Adam in Shampoo's eigenbasis", reference="Vyas et al., ICLR 2025",
    ),
    OptimizerInfo(
        "sophia_h", "SophiaH", "extra", "pytorch_optimizer:SophiaH", lr=5e-2, weight_decay=0.0,
        fixed={"betas": (0.96, 0.99), "update_period": 10}, wd_style="decoupled",
        curvature="hvp", paper=False,
        summary="Sophia with a Hutchinson Hessian estimate (needs create_graph)",
        reference="Liu et al., ICLR 2024",
    ),
    # The paper row's class with its Hessian refreshed: Sophia as its authors define it. Grid
    # centres are the paper row's, since its per-coordinate step is likewise at most lr.
    OptimizerInfo(
        "sophia_g", "SophiaG", "extra", "sophia_opt:SophiaG", lr=1e-4, weight_decay=0.1,
        fixed=SOPHIA_FIXED, wd_style="decoupled", curvature="gnb", paper=False,
        summary="clipped Newton step with a Gauss-Newton-Bartlett diagonal Hessian, refreshed every 10 steps",
        reference="Liu et al., ICLR 2024",
    ),
]

for _info in _PAPER + _EXTRAS:
    register_optimizer(_info)
