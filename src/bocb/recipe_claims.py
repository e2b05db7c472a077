"""What the paper and its released configs use for each training recipe and backbone override.

Sources: the authors' released CIFAR-100 configs in the public repository Westlake-AI/openmixup
(paths below are relative to its ``configs/classification/``), and the paper's Table A3 where no
config was released. bocb's own values are not written here: :mod:`bocb.protocol` reads them from
:data:`bocb.recipes.RECIPES` and the zoo, so the fidelity table cannot drift from the code.
"""

from __future__ import annotations

from bocb.fidelity import Claim

_R50 = "released: cifar100/optimizers/basic/r50_CE_none_bs100.py (+ _sgd_ep200.py)"
_SZ32 = "released: _base_/datasets/cifar100/sz32_bs100.py"
_SZ32_SWIN = "released: _base_/datasets/cifar100/sz32_swin_bs100.py"
_SZ224_SWIN = "released: _base_/datasets/cifar100/sz224_swin_bs100.py"
_DEIT = "released: cifar100/advanced/deit_s_adamw_sz224_bs100_ep200.py"
_CNX = "released: cifar100/advanced/convext_t_adamw_bs100_ep200.py"
_MOGA = "released: cifar100/advanced/moganet_s_adamw_bs100_ep200.py"
_SWIN = "released: cifar100/advanced/swin_t_adamw_sz224_bs100_ep200.py"
_MIXER = "released: cifar100/advanced/mlpmixer_s_adamw_sz224_bs100_ep200.py"
_A3 = "paper Table A3 (no config released)"


def _recipe(subject: str, source: str, **values) -> list[Claim]:
    return [Claim("recipe", subject, key.replace("__", "."), value, source) for key, value in values.items()]


RECIPE_CLAIMS: tuple[Claim, ...] = (
    # PyTorch recipe (AlexNet, VGG, ResNet, DenseNet, MobileNetV2, RepVGG): the R-50 configs.
    *_recipe("pytorch", _R50, epochs=200, batch_size=100, lr=0.1, weight_decay=1e-4, warmup_epochs=0,
             min_lr=0.0, loss="ce", grad_clip=None, drop_path_rate=0.0),
    *_recipe("pytorch", _SZ32, augment__crop_padding=4, augment__crop_pad_mode="reflect", augment__flip=True,
             augment__randaugment=None, augment__mixup_alpha=0.0, augment__cutmix_alpha=0.0,
             augment__random_erasing=0.0),
    Claim("recipe", "pytorch", "precision", "tf32", "released: use_fp16 = False on A100 (cuDNN's TF32 default)"),
    # DeiT recipe (DeiT-S, MLP-S, TransNeXt-T): the DeiT-S config.
    *_recipe("deit", _DEIT, epochs=200, batch_size=100, lr=1e-3, weight_decay=0.05, warmup_epochs=20,
             min_lr=1e-6, grad_clip=5.0, drop_path_rate=0.1, augment__label_smoothing=0.1,
             augment__mixup_alpha=0.8, augment__cutmix_alpha=1.0),
    *_recipe("deit", _SZ224_SWIN, augment__randaugment=(2, 9), augment__random_erasing=0.25),
    Claim("recipe", "deit", "train crop (224 px)", "RandomResizedCrop(224, scale 0.8-1, bicubic)", _SZ224_SWIN,
          note="bocb keeps the data at 32 px on the device and augments there (speed)",
          bocb="random crop 32 (reflect pad 4) + flip, then bicubic resize to 224"),
    Claim("recipe", "deit", "RandAugment magnitude noise", "mstd 0.5", _SZ224_SWIN,
          note="torchvision's RandAugment has no magnitude noise", bocb="none (fixed magnitude)"),
    # ConvNeXt recipe (ConvNeXt, ConvNeXt-V2, MogaNet, UniRepLKNet, Swin-T): the ConvNeXt-T config.
    *_recipe("convnext", _CNX, epochs=200, batch_size=100, lr=1e-3, weight_decay=0.05, warmup_epochs=5,
             min_lr=0.0, augment__label_smoothing=0.1, augment__mixup_alpha=0.8, augment__cutmix_alpha=1.0),
    *_recipe("convnext", _SZ32_SWIN, augment__crop_pad_mode="reflect", augment__randaugment=(2, 9),
             augment__random_erasing=0.25),
    Claim("recipe", "convnext", "drop_path_rate", "0.1-0.3", "paper text (Sec. 4 / Table A3)",
          note="the family takes the low end; ConvNeXt-T's released 0.3 is its override", bocb="0.1"),
    Claim("recipe", "convnext", "grad_clip", 5.0, _MOGA,
          note="ConvNeXt-T's released config has no clipping (its override); MogaNet-S clips at 5"),
    # RSB-A2 (EfficientNet-B0, the MetaFormer S12 models): no CIFAR config released.
    *_recipe("rsb-a2", _A3, lr=5e-3, weight_decay=0.02, loss="bce", augment__randaugment=(2, 7),
             augment__mixup_alpha=0.1, augment__cutmix_alpha=1.0),
    Claim("recipe", "rsb-a2", "warmup_epochs", "not stated", "paper Table A3",
          note="RSB A2 (Wightman et al. 2021) warms up 5 epochs", bocb="5"),
    # Every recipe: the warm-up start and the input normalisation.
    Claim("recipe", "all", "warm-up start", "warmup_ratio 1e-5 x lr", _CNX,
          note="differs by at most one step's lr", bocb="linear from lr / warm-up steps"),
    Claim("recipe", "all", "normalisation", "mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.201)", _SZ32,
          note="the released values are CIFAR-10's mean and per-image std; bocb uses CIFAR-100's own statistics",
          bocb="mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762)"),
)

BACKBONE_CLAIMS: tuple[Claim, ...] = (
    Claim("backbone", "CNX-T", "drop_path_rate", 0.3, _CNX),
    Claim("backbone", "CNX-T", "grad_clip", None, _CNX),
    Claim("backbone", "Swin-T", "warmup_epochs", 20, _SWIN),
    Claim("backbone", "Swin-T", "drop_path_rate", 0.2, _SWIN),
    Claim("backbone", "Swin-T", "min_lr", 1e-6, _SWIN),
    Claim("backbone", "Swin-T", "augment.randaugment", (2, 7), "released: _base_/datasets/cifar100/sz224_randaug_bs100.py"),
    Claim("backbone", "Swin-T", "augment.random_erasing", 0.0, "released: _base_/datasets/cifar100/sz224_randaug_bs100.py"),
    Claim("backbone", "Swin-T", "lr", 5e-4, _SWIN),
    Claim("backbone", "MLP-S", "drop_path_rate", 0.0, _MIXER),
    Claim("backbone", "MLP-S", "drop_rate", 0.1, _MIXER),
    Claim("backbone", "Moga-S", "drop_path_rate", 0.1, _MOGA),
    Claim("backbone", "Moga-S", "grad_clip", 5.0, _MOGA),
    Claim("backbone", "DeiT-S", "min_lr", 1e-6, _DEIT),
    Claim("backbone", "MLP-S", "min_lr", 1e-6, _MIXER),
)
