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
        # Called for every real attribute (this stand-in holds none of them). The module is kept
        # after the first import, but each attribute is read from it anew, so that a test's
        # monkeypatch of the real module is seen. Measured here (loaded machine): about 2 us an access
        # (3 us through importlib each time), against 0.03 us for a plain module. Per batch that is
        # nothing; code that loops per element should bind the attribute to a local first.
        module = self.__dict__.get("_real_module")
        if module is None:
            module = importlib.import_module(self.__name__)
            self.__dict__["_real_module"] = module
        return getattr(module, attr)


NAMES: set[str] = set()  # every module named lazily so far (the workers' fork server imports them)


def lazy_module(name: str) -> Any:
    """A stand-in for module ``name`` (dotted) that imports it when an attribute is first read."""
    NAMES.add(name)
    return _LazyModule(name)
