"""What a worker's first trial would import through bocb's lazy proxies (:mod:`bocb.lazy`),
imported once in the fork server instead (:data:`bocb.executors.local.PRELOAD`).

The registries name torch, timm and torchvision lazily so that reading commands stay light; a
worker forked from a server that had only imported those registries would pay the imports
(about 2 s of CPU here) at its first trial, per slot, which is what the fork server exists to
avoid. This module comes after the trainer in PRELOAD, so every module named lazily by then
(``bocb.lazy.NAMES``: the zoo's builders, the data readers, augmentation, checkpoints, ...) is
imported here: a new lazy name is preloaded without being listed twice.
``tests/test_executors.py`` checks that they are loaded and that nothing here touches CUDA.
"""

import importlib

from bocb import lazy

for _name in sorted(lazy.NAMES):
    importlib.import_module(_name)
