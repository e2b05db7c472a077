"""Modules imported on first use, so that commands which never build a model never import torch.

``bocb plan``, ``status``, ``export``, ``paper`` and ``zoo optimizers`` read study files, the
registries and the store; importing torch, torchvision and timm for them cost 3-8 s per command
(more than all their work). The registries' modules (the zoo's builders, the optimizer and data
code) therefore name those libraries through :func:`lazy_module`: a stand-in module whose first
attribute access imports the real one. Code that only runs while training (builders, the trainer)
uses the names as before; ``tests/test_light_commands.py`` checks which commands stay light.

The standard library's ``importlib.util.LazyLoader`` was not used: it cannot defer a submodule
(finding ``timm.models.resnet`` imports ``timm`` and ``timm.models`` first).
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class _LazyModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        # Called only for names this stand-in lacks, i.e. every real attribute: after the first
        # call the import is a dictionary look-up in sys.modules.
        return getattr(importlib.import_module(self.__name__), attr)


def lazy_module(name: str) -> Any:
    """A stand-in for module ``name`` (dotted) that imports it when an attribute is first read."""
    return _LazyModule(name)
