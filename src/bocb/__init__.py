"""bocb: measure how vision backbones and optimizers couple.

Subpackages: ``bocb.zoo`` (backbones), ``bocb.optim`` (optimizers), ``bocb.paper`` (the BOCB
paper's published numbers). The command line is ``bocb`` (:mod:`bocb.cli`).
"""

__version__ = "0.1.0"
