"""Backbones named by where they come from: ``timm:NAME`` and ``package.module:builder``.

Any name of these forms is accepted wherever a zoo name is (``bocb train --backbone``, study
files, transfer, recommend): the backbone registry resolves it on first use
(:class:`bocb.registry.Registry`'s ``on_miss``) into a :class:`~bocb.zoo.backbones.BackboneInfo`
with ``paper=False``, in every process the same way, so a trial spec that names one rebuilds the
same network in a worker.

- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, num_classes=...)``; no weights are
  downloaded (a run trains from scratch, as the study does). Unknown names are refused in one line
  with timm's closest names.
  A bare timm name that is not a zoo name (``vit_base_patch16_224``) means the same; the
  record's name is always the prefixed one.
- ``package.module:builder``: ``builder(num_classes=...)`` from an importable module, returning an
  ``nn.Module`` that maps ``(N, 3, H, W)`` images to ``(N, num_classes)`` logits. bocb does not edit
  it: it is fed 32x32 CIFAR images as they are (policy ``cifar``), the builder decides its stem.

**Input policy rule** (timm models). ``cifar`` keeps a 32x32 input where an edit of the stem alone
makes the model fit it, like the zoo's own CIFAR variants:

- a model that takes ``img_size`` and ``patch_size`` (ViT-like): built at 32 px with 4 px patches
  (an 8 x 8 token grid, as the zoo's DeiT-S/4);
- a model whose ``feature_info`` names its stages: every down-sampling layer before the first stage
  at reduction >= 4 (the stem: a strided conv, a max-pool, a 4x4 patchify) is set to stride 1 (odd
  convs keep their kernel, even "patchify" convs become 3x3, pools are removed), so the first stage
  sees 32 x 32 instead of 8 x 8, as in the CIFAR ResNet;

and the model must then run a 32 x 32 batch (checked on the meta device, no memory used).
Otherwise the default is ``upsample``: images resized to the model's native size (its pretrained
config's input size), the architecture unchanged. The choice is the default only; ``policy``
overrides it wherever a backbone takes one.

**Design family**, inferred from the built network's modules, as the paper's taxonomy has it:
token mixer ``attention`` (any attention module: a class named ``*Attention*`` with parameters, or
``nn.MultiheadAttention``), ``MLP`` (no conv beyond a patch embedding, LayerNorm), else
convolution; stages ``hierarchical`` when ``feature_info`` reductions grow, ``isotropic`` when
they stay, ``unknown`` without it; group ``modern: transformer``, ``modern: MLP``, ``modern CNN``
(LayerNorm, or depth-wise convs of kernel >= 7: ConvNeXt, MogaNet, UniRepLKNet) or ``classical
CNN`` (BatchNorm convs, small depth-wise ones included: MobileNetV2, EfficientNet). On the 11
paper backbones of those four groups (and ResNet-18) the rule gives the zoo's hand-written group
(tests/test_external_models.py); it has no "primary CNN" (AlexNet, VGG: classical here), no
"MetaFormer baseline" (attention or modern CNN here) and no TransNeXt-like "modern" group. The
training recipe follows as in the paper (:func:`recipe_of`). A plug-in that registers the model itself (:func:`~bocb.zoo.register_backbone`) sets
all of these by hand instead.

Scale: an external model has one size, the one named; a ``tiny`` request (the smoke tier) builds
it as named, and its spec records ``scale = "paper"``.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable
from typing import Any

from bocb.lazy import lazy_module
from bocb.registry import UnknownNameError
from bocb.zoo import surgery
from bocb.zoo.backbones import CIFAR_SIZE, BackboneInfo, _source_version

# Imported when an external model is first probed (bocb.lazy): a name that is not one needs neither.
torch = lazy_module("torch")
nn = lazy_module("torch.nn")

TIMM_PREFIX = "timm:"
_BUILDER = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")
CIFAR_PATCH = 4


def is_external(name: str) -> bool:
    return name.startswith(TIMM_PREFIX) or bool(_BUILDER.match(name))


def resolve_external(name: str) -> BackboneInfo | None:
    """The registry's ``on_miss``: a :class:`BackboneInfo` for an external name, None for other names.

    Raises :class:`UnknownNameError` for an unknown timm model and ``ValueError`` (one line) for a
    builder that cannot be imported or does not return a module."""
    if _BUILDER.match(name) and not name.startswith(TIMM_PREFIX):
        return _builder_info(name)
    if name.startswith(TIMM_PREFIX):
        model_name = name[len(TIMM_PREFIX):]
    elif re.fullmatch(r"[\w.]+", name):  # a bare timm name (`vit_base_patch16_224`): zoo names came first
        import timm

        if not timm.is_model(name):
            return None
        model_name = name
    else:
        return None
    try:
        return _timm_info(model_name)
    except (KeyError, ValueError):
        raise
    except Exception as err:  # noqa: BLE001 - a timm model that cannot be built as asked: one line
        raise ValueError(f"backbone {name!r}: timm raised {type(err).__name__}: {err}") from None


# -- timm -------------------------------------------------------------------------------------


def _timm_info(model_name: str) -> BackboneInfo:
    import timm

    if not timm.is_model(model_name):
        names = timm.list_models()
        # The registry ignores case, "-" and "_" in names; so does this look-up, whichever comes first.
        same = [n for n in names if _loose(n) == _loose(model_name)]
        if len(same) == 1:
            return _timm_info(same[0])
        close = difflib.get_close_matches(model_name, names, n=3, cutoff=0.6)
        raise UnknownNameError("timm model", model_name, close, [f"any of timm's {len(names)} models "
                                                                   "(timm.list_models())"])
    native = _native_size(model_name)
    cifar = _cifar_form(lambda: _timm_build(model_name, 10, "cifar", 0.0))
    cifar_ok, patches = cifar is not None, hasattr(cifar, "patch_embed")
    probe = _on_meta(lambda: _timm_build(model_name, 10, "upsample", 0.0))
    family = infer_family(probe)
    return BackboneInfo(
        name=TIMM_PREFIX + model_name, short=TIMM_PREFIX + model_name, model=model_name,
        default_policy="cifar" if cifar_ok else "upsample", builder=_timm_builder(model_name),
        recipe=recipe_of(family), source="timm", native_size=native,
        supports_drop_path=_takes_drop_path(model_name), paper=False,
        cifar_stem=(f"32 px input in {CIFAR_PATCH} px patches" if patches
                    else "the stem's strides and pools before the first stage removed" if cifar_ok
                    else "no 32x32 form by the stem rule: upsampled to its native size"),
        reference=f"timm.create_model({model_name!r})", scales=("paper",),
        policies=("cifar", "upsample") if cifar_ok else ("upsample",), **family,
    )


def _loose(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def _native_size(model_name: str) -> int:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-1]) if size else 224


def _takes_drop_path(model_name: str) -> bool:
    try:
        _on_meta(lambda: _timm_build(model_name, 10, "upsample", 0.1))
        return True
    except TypeError:
        return False


def _timm_builder(model_name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
        return _timm_build(model_name, num_classes, policy, drop_path_rate)

    return build


def _timm_build(model_name: str, num_classes: int, policy: str, drop_path_rate: float) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": num_classes}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if policy != "cifar":
        return timm.create_model(model_name, **kwargs)
    try:  # ViT-like: the token grid is set by the image and patch size
        return timm.create_model(model_name, img_size=CIFAR_SIZE, patch_size=CIFAR_PATCH, **kwargs)
    except TypeError:
        pass
    model = timm.create_model(model_name, **kwargs)
    unstride_stem(model)
    return model


def unstride_stem(model: nn.Module) -> None:
    """Remove the stem's down-sampling of a timm model whose ``feature_info`` names its stages
    (see the module doc); ``ValueError`` when there is no such stem to edit."""
    info = getattr(model, "feature_info", None)
    entries = list(info) if isinstance(info, list) else []
    first = next((e["module"] for e in entries if e.get("reduction", 0) >= 4 and e.get("module")), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} names no stages (feature_info)")
    edits = []
    for name, module in model.named_modules():
        if name == first or name.startswith(first + "."):
            break
        stride = getattr(module, "stride", 1)
        stride = stride[0] if isinstance(stride, tuple) else stride
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and stride and stride > 1:
            edits.append((name, module))
    if not edits:
        raise ValueError(f"{type(model).__name__}: no down-sampling before {first!r}")
    for name, module in edits:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(module, nn.Conv2d) and module.kernel_size[0] % 2 == 1:
            module.stride = (1, 1)
        elif isinstance(module, nn.Conv2d):
            surgery.replace_conv(parent, attr, kernel=3, stride=1)
        else:  # a pool; setattr also replaces a numbered child of an nn.Sequential
            setattr(parent, attr, nn.Identity())


# -- package.module:builder -------------------------------------------------------------------


def _builder_info(name: str) -> BackboneInfo:
    module_name, _, attr = name.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except ImportError as err:
        raise ValueError(f"backbone {name!r}: cannot import {module_name!r}: {err}") from None
    except AttributeError:
        raise ValueError(f"backbone {name!r}: module {module_name!r} has no {attr!r}") from None
    except Exception as err:  # noqa: BLE001 - the user's module failed while importing: one line
        raise ValueError(f"backbone {name!r}: importing {module_name!r} raised {type(err).__name__}: {err}") from None
    if not callable(builder):
        raise ValueError(f"backbone {name!r}: {attr!r} is not callable")
    family = infer_family(_probe_builder(name, attr, builder))
    version = _source_version(module_name.split(".")[0])

    def build(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
        return _call_builder(name, builder, num_classes)

    return BackboneInfo(
        name=name, short=name, model=attr, default_policy="cifar", builder=build,
        recipe=recipe_of(family), source=module_name.split(".")[0] if version != "unknown" else "user",
        native_size=CIFAR_SIZE, supports_drop_path=False, paper=False,
        cifar_stem="as the builder made it (32x32 input, no edit)", reference=f"{name}(num_classes=...)",
        scales=("paper",), policies=("cifar",), **family,
    )


def _probe_builder(name: str, attr: str, builder: Callable[..., Any]) -> nn.Module:
    """The builder's model with 10 classes: on the meta device (no memory), or for real when it
    cannot be built there; any failure is one line (e.g. a builder without ``num_classes``)."""
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                return _call_builder(name, builder, 10)
        except ValueError:
            raise
        except Exception as err:  # noqa: BLE001 - reported below if the real build fails too
            failure = err
    raise ValueError(f"backbone {name!r}: {attr}(num_classes=10) raised {type(failure).__name__}: {failure}")


def _call_builder(name: str, builder: Callable[..., Any], num_classes: int) -> nn.Module:
    model = builder(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"backbone {name!r}: the builder returned {type(model).__name__}, not a torch nn.Module")
    return model


# -- inspection -------------------------------------------------------------------------------


def _on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return build()


def _cifar_form(build: Callable[[], nn.Module]) -> nn.Module | None:
    """The model ``build`` makes on the meta device when it maps a 32x32 batch to 10 logits, else None."""
    try:
        model = _on_meta(build)
        with torch.no_grad():
            out = model(torch.empty(2, 3, CIFAR_SIZE, CIFAR_SIZE, device="meta"))
        return model if out.shape == (2, 10) else None
    except Exception:  # noqa: BLE001 - any failure means: no 32x32 form by the stem rule
        return None


def _is_attention(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return True
    return "attention" in type(module).__name__.lower() and any(True for _ in module.parameters())


def infer_family(model: nn.Module) -> dict[str, str]:
    """``group``, ``stages``, ``block``, ``token_mixer``, ``residual_norm`` of a built network (see the
    module doc for the rule)."""
    modules = list(model.modules())
    attention = any(_is_attention(m) for m in modules)
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    large_depthwise = any(m.groups > 1 and m.groups == m.in_channels and m.kernel_size[0] >= 7 for m in convs)
    layernorm = any(isinstance(m, nn.LayerNorm) or "layernorm" in type(m).__name__.lower() for m in modules)
    info = getattr(model, "feature_info", None)
    reductions = [e.get("reduction") for e in info] if isinstance(info, list) else []
    reductions = [r for r in reductions if r]
    if len(set(reductions)) > 1:
        stages = "hierarchical"
    elif reductions:
        stages = "isotropic"
    else:
        stages = "unknown"
    if attention:
        group, mixer = "modern: transformer", "attention"
    elif len(convs) <= 1 and layernorm:  # a patch embedding at most: tokens mixed by linear layers
        group, mixer = "modern: MLP", "MLP"
    elif large_depthwise or layernorm:
        group, mixer = "modern CNN", "dw-conv" if large_depthwise else "convolution"
    else:
        group, mixer = "classical CNN", "convolution"
    return {"group": group, "stages": stages, "block": "inferred", "token_mixer": mixer,
            "residual_norm": "inferred"}


def recipe_of(family: dict[str, str]) -> str:
    """The paper's recipe for the family: DeiT for isotropic attention and MLP models (DeiT-S,
    MLP-S), ConvNeXt for hierarchical attention and modern CNNs (Swin-T, ConvNeXt-T), PyTorch's for
    classical CNNs."""
    if family["group"] == "modern: transformer":
        return "convnext" if family["stages"] == "hierarchical" else "deit"
    return {"modern: MLP": "deit", "modern CNN": "convnext"}.get(family["group"], "pytorch")
