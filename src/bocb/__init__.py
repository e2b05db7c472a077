"""bocb: measure how vision backbones and optimizers couple.

Subpackages: ``bocb.zoo`` (backbones), ``bocb.optim`` (optimizers), ``bocb.paper`` (the BOCB
paper's published numbers). From Python, :mod:`bocb.api` runs studies, plans them, writes reports
and recommends optimizers; ``bocb.run_study``, ``bocb.run_transfer``, ``bocb.plan`` and
``bocb.recommend`` are its functions, imported on first use (``bocb.report`` is the report package,
so the report function stays ``bocb.api.report``). The command line is ``bocb`` (:mod:`bocb.cli`).
"""

__version__ = "0.1.0"

# Re-exported lazily: `import bocb` stays cheap (no torch, pandas or store until one is used).
_API = ("run_study", "run_transfer", "plan", "recommend")


def __getattr__(name: str):
    if name in _API:
        from bocb import api

        return getattr(api, name)
    raise AttributeError(f"module 'bocb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
