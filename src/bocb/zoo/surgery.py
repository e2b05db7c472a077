"""Small, explicit edits to library models: CIFAR stems and narrowed plain networks.

The CIFAR input policy keeps a model's design and removes its stem's down-sampling so
native 32x32 images keep their resolution (ResNet/DenseNet: a 3x3 stride-1 conv and no max-pool;
ConvNeXt: a 3x3 stride-1 conv + LayerNorm in place of the 4x4 patchify; MogaNet: a stride-1 stem).
These helpers make those edits on timm/torchvision modules in place, so every edited model stays
the library's class with the library's blocks.
"""

from __future__ import annotations

from bocb.lazy import lazy_module

nn = lazy_module("torch.nn")  # imported at the first edit (bocb.lazy)


def replace_conv(parent: nn.Module, attr: str, kernel: int = 3, stride: int = 1) -> None:
    """Replace ``parent.<attr>`` (a Conv2d) by a ``kernel`` x ``kernel`` conv with ``stride``.

    Channels, groups and bias follow the old conv; padding keeps the spatial size at stride 1.
    """
    old = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]  # type: ignore[index]
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"{type(parent).__name__}.{attr} is {type(old).__name__}, not Conv2d")
    new = nn.Conv2d(
        old.in_channels,
        old.out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=kernel // 2,
        groups=old.groups,
        bias=old.bias is not None,
    )
    if attr.isdigit():
        parent[int(attr)] = new  # type: ignore[index]
    else:
        setattr(parent, attr, new)


def unstride(module: nn.Module) -> None:
    """Set every Conv2d inside ``module`` to stride 1 (padding already keeps the size for odd k)."""
    found = False
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if m.kernel_size[0] % 2 == 0:
                raise ValueError(f"cannot unstride an even {m.kernel_size} kernel without changing it")
            m.stride = (1, 1)
            found = True
    if not found:
        raise ValueError(f"{type(module).__name__} has no Conv2d to unstride")


def first_strided(blocks: nn.Module) -> nn.Module:
    """The first block in ``blocks`` (a sequence of stages of blocks) that holds a stride-2 conv."""
    for stage in blocks.children():
        for block in stage.children():
            if any(isinstance(m, nn.Conv2d) and m.stride[0] == 2 for m in block.modules()):
                return block
    raise ValueError("no stride-2 block found")


def narrow_plain(features: nn.Sequential, classifier: nn.Sequential, factor: int,
                 pool_area: int, num_classes: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Copies of a plain conv stack + MLP classifier (AlexNet, VGG) with widths divided by ``factor``.

    Every layer keeps its kind, kernel, stride and padding; channels and hidden units shrink.
    ``pool_area`` is the number of spatial positions the classifier's first Linear sees.
    """
    channels = 3
    new_features: list[nn.Module] = []
    for m in features:
        if isinstance(m, nn.Conv2d):
            out = max(m.out_channels // factor, 4)
            new_features.append(
                nn.Conv2d(channels, out, m.kernel_size, m.stride, m.padding, bias=m.bias is not None)
            )
            channels = out
        elif isinstance(m, nn.BatchNorm2d):
            new_features.append(nn.BatchNorm2d(channels))
        else:
            new_features.append(m)
    width = channels * pool_area
    linears = [m for m in classifier if isinstance(m, nn.Linear)]
    new_classifier: list[nn.Module] = []
    for m in classifier:
        if isinstance(m, nn.Linear):
            last = m is linears[-1]
            out = num_classes if last else max(m.out_features // factor, 8)
            new_classifier.append(nn.Linear(width, out))
            width = out
        else:
            new_classifier.append(m)
    return nn.Sequential(*new_features), nn.Sequential(*new_classifier)
