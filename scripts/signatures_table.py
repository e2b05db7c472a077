"""Write ``src/bocb/optim/signatures.json``: the constructor arguments and defaults of every
registered optimizer (see bocb.optim.signatures). Run after adding an optimizer or upgrading an
optimizer library: ``.venv/bin/python scripts/signatures_table.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bocb.optim import library_version, list_optimizers
from bocb.optim import signatures

BUILT_IN = ("torch", "timm", "pytorch_optimizer", "sophia_opt", "schedulefree")  # the libraries of bocb's zoo
OUT = Path(__file__).resolve().parents[1] / "src" / "bocb" / "optim" / signatures.TABLE_NAME


def main() -> int:
    table, left = {}, []
    for info in list_optimizers():
        if info.library not in BUILT_IN:  # an installed plug-in's optimizer is inspected at run time
            continue
        entry = signatures.table_entry(info.load_class(), info.target, library_version(info.library))
        if entry is None:
            left.append(info.name)
        else:
            table[info.name] = entry
    OUT.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{len(table)} optimizers -> {OUT}" + (f"; not tabulated (inspected at run time): {', '.join(left)}" if left else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
