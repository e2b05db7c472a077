"""What a worker's first trial would import through bocb's lazy proxies (:mod:`bocb.lazy`),
imported once in the fork server instead (:data:`bocb.executors.local.PRELOAD`).

The registries name torch, timm and torchvision lazily so that reading commands stay light; a
worker forked from a server that had only imported those registries would pay the imports
(about 2 s of CPU here) at its first trial, per slot, which is what the fork server exists to
avoid. ``tests/test_executors.py`` checks that these are loaded after the preload and that
nothing here touches CUDA.
"""

# ruff: noqa: F401  (imported for their side effect: being in sys.modules before the fork)
import pyarrow.parquet
import safetensors.torch
import timm
import timm.data.mixup
import timm.data.random_erasing
import timm.models.byobnet
import timm.models.densenet
import timm.models.efficientnet
import timm.models.metaformer
import timm.models.mlp_mixer
import timm.models.resnet
import timm.optim
import timm.optim._param_groups
import torch
import torch.nn.functional
import torchvision
import torchvision.datasets
import torchvision.io
import torchvision.transforms.v2

import bocb.zoo.models.moganet
import bocb.zoo.models.transnext
import bocb.zoo.models.unireplknet
