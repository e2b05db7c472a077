"""What the machine is (Python, torch, CUDA, the GPU) and the data, decoded once into a cache.

The GPU check's first step: later steps read the decoded dataset from ``--cache-dir`` instead of
decoding 60,000 JPEGs each.

    python benchmarks/environment.py --data /path/to/cifar10-parquet --cache-dir /tmp/cache --json-out env.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from bocb.data import load_dataset, parse_data_arg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="sample")
    p.add_argument("--cache-dir", type=Path, required=True)
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args()
    t0 = time.time()
    data = load_dataset(parse_data_arg(args.data), cache_dir=args.cache_dir)
    out = {
        "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "gpus": torch.cuda.device_count(),
        "data": {"name": data.name, "source": data.source, "train": len(data.train), "test": len(data.test),
                 "classes": data.num_classes, "load_seconds": round(time.time() - t0, 1)},
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported())
    print(json.dumps(out))
    if args.json_out:
        args.json_out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
