"""What the paper and its released configs fix for each of the 20 optimizers, and where it says so.

:data:`OPTIMIZER_CLAIMS` holds one :class:`bocb.fidelity.Claim` per setting: ``subject`` is the
optimizer's short name, ``key`` a constructor argument of bocb's class or one of
:data:`SPECIAL_KEYS`, ``paper`` the released (or paper) value, ``source`` where it is read, and
``note`` why bocb differs or what the value rests on. bocb's own value is never written here:
:func:`bocb_value` reads it from :func:`bocb.optim.resolve_optimizer`, so a table built from the two
cannot drift from the code. A claim without a note is one bocb matches (a test checks it).

Sources, all in the public repository Westlake-AI/openmixup (the same files ship under
``openmixup/`` in Westlake-AI/Backbone-vs-Optimizer):

- the CIFAR-100 ResNet-50 configs ``configs/classification/cifar100/optimizers/basic/
  r50_CE_none_bs100_<optimizer>_ep200.py`` (SGD, Adam, AdamW, AdamP, LAMB, Adan, AdaBelief,
  AdaFactor);
- the optimizer classes ``openmixup/core/optimizers/<name>.py``, whose defaults stand wherever a
  config passes nothing;
- for LARS, which has no config in the study, the released LARS configs
  (``configs/selfsup/byol/imagenet/r50_8xb64_accu8_cos_lr4_8.py`` and the other BYOL/Barlow Twins
  configs), the only ones that show how the authors drive their LARS class.

The learning-rate and weight-decay claims are the modes, over the 16 backbones, of the values the
paper chose (Tables A4/A5, shipped in ``bocb/paper/data``), which are the grid centres.
"""

from __future__ import annotations

from typing import Any

from bocb.fidelity import Claim
from bocb.optim.build import resolve_optimizer

REPO = "Westlake-AI/openmixup"
CONFIGS = "configs/classification/cifar100/optimizers/basic"
CLASSES = "openmixup/core/optimizers"
LARS_CONFIG = "configs/selfsup/byol/imagenet/r50_8xb64_accu8_cos_lr4_8.py"

# Keys that are not constructor arguments: the weight-decay rule, a gradient clip the Stepper
# applies for the optimizer, how the step is driven (Sophia's variant), and whether norms and
# biases are left out of LARS's trust ratio (the released configs' ``lars_exclude``).
SPECIAL_KEYS = ("wd_policy", "max_grad_norm", "curvature", "lars_exclude")


def _config(name: str) -> str:
    return f"released: {REPO} {CONFIGS}/r50_CE_none_bs100_{name}_ep200.py"


def _class(name: str) -> str:
    return f"released: {REPO} {CLASSES}/{name}.py (class default; no config overrides it)"


def _assumed(what: str) -> str:
    return f"not in the released configs: {what}"


def _claims(subject: str, source: str, note: str = "", **values: Any) -> list[Claim]:
    return [Claim("optimizer", subject, key, value, source, note) for key, value in values.items()]


# Paper Tables A4/A5: modal (lr, weight decay) over the 16 backbones, snapped to the 1-2-5 series.
_GRID_CENTRES = {
    "SGD-M": (0.1, 1e-4), "SGDP": (0.1, 1e-4), "LION": (1e-4, 0.0), "Adam": (5e-4, 0.0),
    "Adamax": (1e-3, 1e-4), "NAdam": (5e-4, 0.0), "AdamW": (5e-4, 0.05), "LAMB": (5e-3, 0.05),
    "RAdam": (1e-3, 0.0), "AdamP": (1e-3, 0.05), "Adan": (2e-3, 0.05), "AdaBelief": (5e-3, 0.01),
    "AdaBound": (5e-4, 0.0), "AdaFactor": (5e-4, 0.01), "LARS": (1.0, 1e-6), "NovoGrad": (2e-3, 0.01),
    "Sophia": (1e-4, 0.1), "AdaGrad": (5e-4, 0.0), "AdaDelta": (2.0, 0.0), "RMSProp": (5e-4, 0.0),
}
_TABLES = "paper Tables A4/A5: the mode over 16 backbones of the chosen values"
_TORCH = _assumed("bocb keeps the torch.optim defaults")
_ADAM_BETAS = (0.9, 0.999)

_grid = [
    claim
    for subject, (lr, wd) in _GRID_CENTRES.items()
    for claim in _claims(subject, _TABLES, lr=lr, weight_decay=wd)
]

_released_rules = [
    *_claims("SGD-M", _config("sgd"), wd_policy="decay_all", momentum=0.9, nesterov=False, dampening=0),
    *_claims("Adam", _config("adam"), wd_policy="decay_all", betas=_ADAM_BETAS, eps=1e-8, amsgrad=False),
    *_claims("AdamW", _config("adamw"), wd_policy="no_decay_1d", betas=_ADAM_BETAS, eps=1e-8, amsgrad=False),
    *_claims("AdamP", _config("adamp"), wd_policy="decay_all", betas=_ADAM_BETAS, eps=1e-8, delta=0.1,
             wd_ratio=0.1, nesterov=False),
    *_claims("LAMB", _config("lamb"), wd_policy="no_decay_1d"),
    *_claims("LAMB", _class("lamb"), betas=_ADAM_BETAS, eps=1e-6, max_grad_norm=1.0, trust_clip=False,
             always_adapt=False, grad_averaging=True, bias_correction=True),
    *_claims("Adan", _config("adan"), wd_policy="no_decay_1d", betas=(0.98, 0.92, 0.99), eps=1e-8),
    *_claims("Adan", _config("adan"),
             note="timm's Adan has no max_grad_norm; bocb's Stepper clips the global gradient norm "
                  "at 5 before the step (torch's clip_grad_norm_), the rule the released class "
                  "applies inside its step", max_grad_norm=5.0),
    *_claims("Adan", _class("adan"), no_prox=False),
    *_claims("AdaBelief", _config("adabelief"), wd_policy="decay_all", betas=_ADAM_BETAS, eps=1e-8,
             amsgrad=False, decoupled_decay=True, fixed_decay=False, rectify=True, degenerated_to_sgd=True),
    *_claims("AdaFactor", _config("adafactor"), wd_policy="decay_all", betas=None, eps=1e-30, eps_scale=1e-3,
             clip_threshold=1.0, decay_rate=-0.8, scale_parameter=True, warmup_init=False),
    *_claims("AdaFactor", _class("adafactor"),
             note="the released class factors the trailing two dims of every tensor of 2 or more dims; "
                  "timm's factors a convolution's output/input dims, and only dims above 16",
             min_dim_size_to_factor="every tensor of 2+ dims"),
]

_unreleased = [
    *_claims("SGDP", _assumed("as SGD-M, its released analogue: momentum 0.9, no Nesterov, every "
                              "parameter decayed"), wd_policy="decay_all", momentum=0.9, nesterov=False),
    *_claims("SGDP", _class("sgdp"), eps=1e-8, delta=0.1, wd_ratio=0.1),
    *_claims("LION", _assumed("as AdamW, its released analogue (decoupled decay): norms and biases not "
                              "decayed"), wd_policy="no_decay_1d"),
    *_claims("LION", _class("lion"), betas=(0.9, 0.99)),
    *[c for name in ("Adamax", "NAdam", "RAdam")
      for c in _claims(name, _assumed("as Adam, its released analogue (L2 decay): every parameter "
                                      "decayed; torch.optim's betas and eps"),
                       wd_policy="decay_all", betas=_ADAM_BETAS, eps=1e-8)],
    *_claims("AdaBound", _assumed("as Adam, its released analogue (L2 decay): every parameter decayed"),
             wd_policy="decay_all"),
    *_claims("AdaBound", _class("adabound"), betas=_ADAM_BETAS, final_lr=0.1, gamma=1e-3, eps=1e-8,
             ams_bound=False),
    *_claims("AdaBound", _assumed("the paper's AdaBound, not the released AdaBoundW: L2 decay"),
             weight_decouple=False),
    *_claims("NovoGrad", _assumed("as LAMB, its released analogue (layer-wise normalised update): "
                                  "norms and biases not decayed"), wd_policy="no_decay_1d"),
    *_claims("NovoGrad", _class("nvnovograd"), betas=(0.95, 0.98), eps=1e-8, grad_averaging=False,
             amsgrad=False),
    *_claims("Sophia", _assumed("as AdamW, its released analogue (decoupled decay): norms and biases "
                                "not decayed"), wd_policy="no_decay_1d"),
    *_claims("Sophia", _class("sophia"), betas=(0.965, 0.99), rho=0.04),
    *_claims("Sophia", f"released: {REPO} {CLASSES}/sophia.py and the runner, which never call "
                       "update_hessian(): the Hessian estimate stays zero (an inference from the "
                       "released code, not a statement of the paper)",
             note="the paper's row runs this variant (clipped sign of momentum); the real SophiaG, "
                  "refreshing its Hessian, is the extra 'sophia_g'", curvature="none"),
    *_claims("AdaGrad", _assumed("as SGD and Adam, its released analogues (L2 decay): every parameter "
                                 "decayed"), wd_policy="decay_all"),
    *_claims("AdaGrad", _TORCH, lr_decay=0, eps=1e-10, initial_accumulator_value=0),
    *_claims("AdaDelta", _assumed("as SGD and Adam, its released analogues (L2 decay): every parameter "
                                  "decayed"), wd_policy="decay_all"),
    *_claims("AdaDelta", _TORCH, rho=0.9, eps=1e-6),
    *_claims("RMSProp", _assumed("as SGD and Adam, its released analogues (L2 decay): every parameter "
                                 "decayed"), wd_policy="decay_all"),
    *_claims("RMSProp", _assumed("category (d), without momentum; torch.optim's other defaults"),
             alpha=0.99, eps=1e-8, momentum=0.0, centered=False),
]

_lars = [
    *_claims("LARS", f"released: {REPO} {LARS_CONFIG}: norms and biases get weight_decay=0 and "
                     "lars_exclude=True", wd_policy="no_decay_1d", lars_exclude=True),
    *_claims("LARS", f"released: {REPO} {LARS_CONFIG}", momentum=0.9, nesterov=False, dampening=0),
    *_claims("LARS", f"released: {REPO} {CLASSES}/lars.py (eta=0.001; no LARC clipping)",
             trust_coeff=1e-3, trust_clip=False),
    *_claims("LARS", _assumed("the LARS algorithm (You et al. 2017): the trust ratio applies at every "
                              "weight decay"),
             note="the released class adapts only with none_zero=True, which no released config sets; "
                  "timm adapts only where weight decay is non-zero, so at the paper's weight decay 0 "
                  "(ConvNeXt-T, MogaNet-S) its LARS was SGD-M. The paper's lr there (0.06, against about "
                  "1 elsewhere) suggests its runs did not adapt either; bocb's do",
             always_adapt=True),
]

OPTIMIZER_CLAIMS: tuple[Claim, ...] = (*_grid, *_released_rules, *_unreleased, *_lars)


def bocb_value(claim: Claim) -> Any:
    """bocb's value for an optimizer claim, read from ``resolve_optimizer(claim.subject)`` (the
    ``paper`` weight-decay policy, the grid centres): a constructor argument (tuples as tuples),
    or for :data:`SPECIAL_KEYS` the resolved weight-decay rule, the Stepper's gradient clip, the
    curvature driving, or whether norms and biases are left out of LARS's trust ratio."""
    if claim.kind != "optimizer":
        raise ValueError(f"bocb_value reads optimizer claims, not {claim.kind!r} ones")
    spec = resolve_optimizer(claim.subject)
    args = spec.constructor_args()
    if claim.key in args:
        return args[claim.key]
    if claim.key == "wd_policy":
        return spec.wd_policy
    if claim.key == "max_grad_norm":
        return spec.clip_grad_norm
    if claim.key == "curvature":
        return spec.curvature
    if claim.key == "lars_exclude":
        return spec.exempt_options.get("always_adapt") is False
    raise KeyError(
        f"{claim.subject}: no setting {claim.key!r}: valid: {', '.join(sorted(args))}, {', '.join(SPECIAL_KEYS)}"
    )
