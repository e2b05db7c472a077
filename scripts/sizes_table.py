"""Count and write ``src/bocb/sizes.json``: forward FLOPs, parameters and parameters + buffers
of every registered zoo backbone at each of its scales and input policies (see bocb.sizes).

Run after adding a backbone or changing a builder: ``.venv/bin/python scripts/sizes_table.py``
(about 3 minutes on 2 CPU cores). A third head size (37 classes) is counted for every entry and
must equal the linear extrapolation from 10 and 100 classes, else nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.progress import track

from bocb.compute import count_forward_flops, count_state
from bocb.provenance import distribution_version
from bocb import sizes
from bocb.zoo import list_backbones, resolve_backbone

CHECK_CLASSES = 37
OUT = Path(__file__).resolve().parents[1] / "src" / "bocb" / sizes.TABLE_NAME


def counts(name: str, scale: str, policy: str, num_classes: int) -> tuple[float, int, int]:
    spec = resolve_backbone(name, num_classes=num_classes, policy=policy, scale=scale).to_json()
    return (count_forward_flops(spec), *count_state(spec))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default: {OUT})")
    args = parser.parse_args()
    # bocb's own zoo (the paper's 20 and ResNet-18), not installed plug-ins: their builders may change.
    zoo = ("bocb.zoo.classical", "bocb.zoo.modern", "bocb.zoo.metaformer")
    combos = [(info.name, scale, policy) for info in list_backbones() if info.builder.__module__ in zoo
              for scale in info.scales for policy in info.policies]
    entries, bad = {}, []
    for name, scale, policy in track(combos, description="counting"):
        low, high, check = (counts(name, scale, policy, n) for n in (*sizes.CLASS_COUNTS, CHECK_CLASSES))
        entry = {"flops": [low[0], high[0]], "params": [low[1], high[1]], "state": [low[2], high[2]],
                 "builder": sizes.builder_of(name)}
        for i, what in enumerate(("flops", "params", "state")):
            if abs(sizes.extrapolate(entry[what], CHECK_CLASSES) - check[i]) > 1e-6 * max(1.0, check[i]):
                bad.append(f"{name} {scale} {policy}: {what} not linear in the number of classes")
        input_size = resolve_backbone(name, policy=policy, scale=scale).input_size
        entries[sizes.key(name, scale, policy, input_size)] = entry
    if bad:
        print("\n".join(bad), file=sys.stderr)
        return 1
    versions = {lib: distribution_version(lib) for lib in ("torch", "torchvision", "timm")}
    args.out.write_text(json.dumps({"generated_with": versions, "entries": entries}, indent=1, sort_keys=True) + "\n")
    print(f"{len(entries)} entries -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
