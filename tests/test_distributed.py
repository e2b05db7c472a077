"""One trial over two processes (DistributedDataParallel, gloo on CPU) against the same trial in
one process with the same global batch (bocb.distributed).

The trial is chosen so that the two must agree to float rounding: a tiny DeiT-S (LayerNorm, no
BatchNorm), no stochastic depth and no random augmentation (both are drawn per process). The
tolerance, 1e-4 relative on the loss, covers the different summation order of two half-batch
gradients averaged by all-reduce against one whole-batch gradient.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from bocb.data import DatasetSpec, load_dataset
from bocb.data.augment import AugmentConfig
from bocb.distributed import DistContext, from_env, local_share
from bocb.spec import resolve_trial
from bocb.trial import RunOptions, run_trial

EPOCHS = 3


def _spec():
    spec = resolve_trial("DeiT-S", "SGD-M", data=DatasetSpec("sample"), num_classes=10, tier="smoke",
                         policy="cifar", lr=0.05, weight_decay=1e-4)
    recipe = spec.recipe.with_changes(augment=AugmentConfig(crop_padding=None, flip=False), epochs=EPOCHS,
                                      warmup_epochs=0, batch_size=20, train_per_class=10, test_per_class=10,
                                      drop_path_rate=0.0)
    return dataclasses.replace(spec, recipe=recipe,
                               backbone=dataclasses.replace(spec.backbone, drop_path_rate=0.0))


def _worker(rank: int, world: int, port: int, work: str, out: str, stop_after: int | None) -> None:
    import os

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        context = DistContext(rank, world)
        dataset = load_dataset(DatasetSpec("sample"))
        record = run_trial(_spec(), dataset, RunOptions(device="cpu", work_dir=Path(work), dist=context,
                                                        stop_after_epochs=stop_after))
        Path(out, f"rank{rank}.json").write_text(json.dumps(
            {"status": record["status"], "epochs": record["epochs"],
             "resumed": record.get("resumed_from_epoch"), "processes": record.get("processes"),
             "per_process": record.get("batch_per_process")}))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(work: Path, out: Path, stop_after: int | None = None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(2, _free_port(), str(work), str(out), stop_after), nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _close(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["test_loss"] == pytest.approx(y["test_loss"], rel=1e-4)
        assert x["test_top1"] == y["test_top1"]


def test_local_share_and_env():
    index = torch.arange(8)
    assert local_share(index, DistContext(1, 2)).tolist() == [4, 5, 6, 7]
    assert local_share(index, None) is index
    with pytest.raises(ValueError, match="does not split evenly"):
        local_share(torch.arange(7), DistContext(0, 2))
    assert from_env({"WORLD_SIZE": "1"}) is None
    assert from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == DistContext(2, 4, 0)


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tmp_path):
    torch.set_num_threads(1)
    single = run_trial(_spec(), load_dataset(DatasetSpec("sample")), RunOptions(device="cpu"))
    assert single["status"] == "done"

    ranks = _two_processes(tmp_path / "work", tmp_path / "out")
    assert [r["status"] for r in ranks] == ["done", "done"] and ranks[0]["processes"] == 2
    # Each process trained on its half of every batch of 20: the average of two different halves'
    # gradients is the whole batch's; the same half twice, or the whole batch twice, would not be both.
    assert [r["per_process"] for r in ranks] == [10, 10]
    _close(ranks[0]["epochs"], single["epochs"])
    numbers = [[{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rank["epochs"]] for rank in ranks]
    assert numbers[0] == numbers[1]  # every process has the same rows (timings aside)

    # Stopped after one epoch (rank 0 wrote the checkpoint), then run again: it resumes at epoch 1
    # in both processes and ends where the uninterrupted run did.
    ranks = _two_processes(tmp_path / "work2", tmp_path / "out2", stop_after=1)
    assert [r["status"] for r in ranks] == ["interrupted", "interrupted"]
    ranks = _two_processes(tmp_path / "work2", tmp_path / "out3")
    assert [r["resumed"] for r in ranks] == [1, 1]
    _close(ranks[0]["epochs"], single["epochs"])


@pytest.mark.slow
def test_torchrun_starts_bocb_train_on_two_processes(tmp_path):
    """The launcher users have: torchrun runs `bocb train` in two processes; one JSON record comes out."""
    import os
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "bocb", "train",
         "--backbone", "DeiT-S", "--optimizer", "SGD-M", "--data", "sample", "--recipe", "smoke", "--epochs", "1",
         "--train-per-class", "20", "--test-per-class", "10", "--batch-size", "20", "--device", "cpu",
         "--work-dir", str(tmp_path / "w"), "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "BOCB_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 alone reports
    record = json.loads(lines[0])
    assert (record["status"], record["processes"], record["batch_per_process"]) == ("done", 2, 10)
    assert (tmp_path / "w" / "final.safetensors").exists()
