"""Images/s of the streaming loader (bocb.data.stream): decode + transform in DataLoader workers.

Writes an ImageNet-layout folder of real images (CIFAR-10 from the bundled sample, upscaled to
ImageNet-like sides, JPEG quality 90; tests/imagenet_like.py) into a temporary folder, then times one
pass over it per worker count, for the training transform (RandomResizedCrop 224 + flip) and the
evaluation transform (resize 256, centre crop 224), CPU decoding. The first batch (worker start-up)
is included. The machine's load average is printed with the figures: on a shared machine they
are only as good as the cores that were free.

Caveat: upscaled CIFAR images are smoother than photographs, so their JPEGs are small (~15 kB at
300-500 px; ImageNet's train JPEGs average ~110 kB at ~400x350) and cheaper to decode (measured
here: 0.56 ms for a 400x450 JPEG of 39 kB, 1.23 ms at 113 kB). ``--noise 25`` adds Gaussian noise
before encoding to bring the files to ImageNet's size, and so its decoding cost.

    python benchmarks/stream.py                      # 256 images, workers 0,1,2, ~30 s on 2 cores
    python benchmarks/stream.py --workers 0,4,8 --images 2000 --json
    python benchmarks/stream.py --decode cpu,cuda    # also nvJPEG on the GPU (workers only read files)

With ``--decode cuda`` each batch's JPEGs are decoded on the GPU and cropped there
(``epoch_loader(decode_device="cuda")``): the rows say how many images per second the same loader
gives when the CPU only reads files. ``make gpu-check`` runs it on the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from imagenet_like import write_folder  # noqa: E402

from bocb.data import DatasetSpec  # noqa: E402
from bocb.data.stream import epoch_loader, measure  # noqa: E402
from bocb.data.stream_sources import open_stream  # noqa: E402
from bocb.data.transforms import EvalTransform, TrainTransform  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256, help="training images (default 256)")
    p.add_argument("--workers", default="0,1,2", help="DataLoader worker counts, comma-separated")
    p.add_argument("--size", type=int, default=224, help="crop side (default 224)")
    p.add_argument("--sides", default="300,500", help="image sides drawn in this range (default 300,500)")
    p.add_argument("--noise", type=float, default=0.0,
                   help="std of Gaussian noise added before JPEG encoding (25: ImageNet-sized files)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--decode", default="cpu", help="where JPEGs are decoded: cpu, cuda, or both (cpu,cuda)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON document")
    p.add_argument("--json-out", type=Path, help="also write the JSON document to this file")
    args = p.parse_args()
    decodes = args.decode.split(",")
    if any(d not in ("cpu", "cuda") for d in decodes):
        p.error(f"--decode: expected cpu, cuda or cpu,cuda, got {args.decode!r}")
    if "cuda" in decodes and not torch.cuda.is_available():
        p.error("--decode cuda: CUDA is not available on this machine")
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision's codec deprecation
    lo, hi = (int(v) for v in args.sides.split(","))
    per_class = max(1, args.images // 10)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_folder(Path(tmp) / "imagenet-like", {"train": per_class, "val": 1}, sides=(lo, hi),
                            noise=args.noise)
        data = open_stream(DatasetSpec("folder", str(root), stream=True))
        kb = sum(os.path.getsize(data.train.path(i)) for i in range(len(data.train))) / len(data.train) / 1e3
        for name, transform, train in (("train", TrainTransform(args.size), True),
                                       ("eval", EvalTransform(args.size, crop_ratio=0.875), False)):
            for decode in decodes:
                for workers in (int(w) for w in args.workers.split(",")):
                    loader = epoch_loader(data.train, transform, batch_size=args.batch_size, seed=0, epoch=0,
                                          shuffle=train, drop_last=train, num_workers=workers, decode_device=decode)
                    result = measure(loader)
                    if decode == "cuda":
                        torch.cuda.synchronize()
                    per_worker = result["images_per_s"] / max(workers, 1)
                    rows.append({"transform": name, "decode": decode, "workers": workers, **result,
                                 "images_per_s_per_worker": round(per_worker, 1)})
    load_after = os.getloadavg()
    meta = {"machine": f"{os.cpu_count()} CPU cores", "torch": torch.__version__,
            "torch_threads_main": torch.get_num_threads(), "images": len(data.train),
            "image_sides": [lo, hi], "noise": args.noise, "kb_per_image": round(kb, 1), "crop": args.size,
            "load_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "when": time.strftime("%Y-%m-%d %H:%M")}
    if torch.cuda.is_available():
        meta["gpu"] = torch.cuda.get_device_name(0)
    if args.json_out:
        args.json_out.write_text(json.dumps({"meta": meta, "rows": rows}) + "\n")
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}))
        return 0
    print(f"streaming loader, {meta['images']} JPEGs of {lo}-{hi} px ({meta['kb_per_image']} kB each), crop "
          f"{args.size}; {meta['machine']}, load average {meta['load_1min_before_after'][0]} before, "
          f"{meta['load_1min_before_after'][1]} after; workers run torch with 1 thread, workers=0 decodes in "
          f"the main process ({meta['torch_threads_main']} torch threads)")
    print(f"{'transform':<10}{'decode':>7}{'workers':>8}{'images/s':>10}{'per worker':>12}{'first batch s':>15}")
    for r in rows:
        print(f"{r['transform']:<10}{r['decode']:>7}{r['workers']:>8}{r['images_per_s']:>10}"
              f"{r['images_per_s_per_worker']:>12}{r['first_batch_s']:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
