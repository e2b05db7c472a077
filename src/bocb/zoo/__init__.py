"""The zoo: backbone and optimizer registries.

Importing this package registers the 20 paper backbones (``classical``, ``modern``,
``metaformer``) and the backbones of installed plug-ins (entry-point group ``bocb.backbones``).
"""

# Import order is registration order, which is the paper's Table 1 column order.
from bocb.zoo import classical as _classical  # noqa: F401, I001  (registers)
from bocb.zoo import modern as _modern  # noqa: F401, I001  (registers)
from bocb.zoo import metaformer as _metaformer  # noqa: F401, I001  (registers)
from bocb.zoo.backbones import (
    BACKBONES,
    POLICIES,
    SCALES,
    BackboneInfo,
    BackboneSpec,
    build_backbone,
    classifier_name,
    count_params,
    get_backbone_info,
    init_backbone,
    list_backbones,
    load_entry_points,
    register_backbone,
    resolve_backbone,
)

load_entry_points()

__all__ = [
    "BACKBONES",
    "POLICIES",
    "SCALES",
    "BackboneInfo",
    "BackboneSpec",
    "build_backbone",
    "classifier_name",
    "count_params",
    "get_backbone_info",
    "init_backbone",
    "list_backbones",
    "load_entry_points",
    "register_backbone",
    "resolve_backbone",
]
