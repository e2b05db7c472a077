"""Data files never run code: CIFAR python batches go through a restricted unpickler.

Batches are written by the test the ways real ones are: as Python 2's cPickle wrote the released
files (byte strings, ``numpy.core`` names) and as Python 3 writes them with every protocol. A
crafted batch whose ``__reduce__`` would create a marker file must be refused, by name, without
the marker ever appearing: when loaded directly, and through ``bocb plan`` on a study whose data
is found in ``$BOCB_DATA_DIR``.
"""

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bocb.data import DatasetSpec, load_dataset, parse_data_arg
from bocb.data.safe_pickle import UnsafeDataError, load_batch

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (BINSTRING), as the released CIFAR batches hold them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _py2_dumps(obj) -> bytes:
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # NumPy 1 (what wrote the released files) named its reconstructor numpy.core.multiarray.
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"batch_label": "training batch 1 of 5", "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}


@pytest.mark.parametrize("protocol", ["py2", 0, 1, 2, 3, 4, 5])
def test_real_format_batches_load_with_every_protocol(tmp_path, protocol):
    batch = _batch(7, seed=1)
    raw = _py2_dumps(batch) if protocol == "py2" else pickle.dumps(batch, protocol=protocol)
    (tmp_path / "b").write_bytes(raw)
    got = load_batch(tmp_path / "b")
    assert np.array_equal(got["data"], batch["data"]) and got["data"].dtype == np.uint8
    assert got["labels"] == batch["labels"] and got["filenames"] == batch["filenames"]


class _Payload:
    """Unpickling this calls ``exec``, which would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _write_cifar10(root: Path, payload: object | None = None) -> Path:
    """A CIFAR-10 python folder (10 train and 10 test images); ``payload`` replaces test labels."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = _batch(10 if name in ("data_batch_1", "test_batch") else 0, seed=i)
        if name == "test_batch" and payload is not None:
            batch["labels"] = payload
        (base / name).write_bytes(_py2_dumps(batch))
    (base / "batches.meta").write_bytes(_py2_dumps({"label_names": NAMES}))
    return root


def test_a_cifar_folder_loads_through_the_restricted_reader(tmp_path):
    root = _write_cifar10(tmp_path / "ok")
    data = load_dataset(parse_data_arg(str(root)))
    assert data.classes == tuple(NAMES) and (len(data.train), len(data.test)) == (10, 10)
    # Stored as CHW rows of 3072: the first image's first row of red is the first 32 bytes.
    first = pickle.loads((root / "cifar-10-batches-py" / "data_batch_1").read_bytes(), encoding="latin1")
    assert data.train.images[0, 0, 0].tolist() == first["data"][0, :32].tolist()


@pytest.mark.parametrize("payload", ["reduce", "global"])
def test_a_crafted_batch_is_refused_by_name_and_runs_nothing(tmp_path, payload):
    marker = tmp_path / "marker"
    if payload == "reduce":
        bad = _Payload(marker)
    else:  # a pickle that names os.system directly, written by hand
        bad = None
    root = _write_cifar10(tmp_path / "bad", payload=bad)
    test_batch = root / "cifar-10-batches-py" / "test_batch"
    if payload == "global":
        test_batch.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(UnsafeDataError) as err:
        load_dataset(DatasetSpec("cifar10", str(root)))
    message = str(err.value)
    assert str(test_batch) in message and "\n" not in message
    assert (".exec" if payload == "reduce" else "os.system") in message  # py2 spelling: __builtin__.exec
    assert not marker.exists()


def test_codecs_encode_is_admitted_for_latin1_only(tmp_path):
    (tmp_path / "b").write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(UnsafeDataError, match="rot13"):
        load_batch(tmp_path / "b")


@pytest.mark.slow
def test_bocb_plan_refuses_a_crafted_batch_found_in_the_data_dir(tmp_path):
    marker = tmp_path / "marker"
    root = _write_cifar10(tmp_path / "datadir", payload=_Payload(marker))
    study = tmp_path / "s.toml"
    study.write_text('[study]\nname = "s"\ndata = "cifar10"\ntier = "smoke"\n'
                     '[[backbones]]\nname = "R-18"\npolicy = "cifar"\n[[optimizers]]\nname = "SGD-M"\n')
    env = dict(os.environ, BOCB_DATA_DIR=str(root), BOCB_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "bocb", "plan", str(study), "--store", str(tmp_path / "s.sqlite")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "refusing to read" in proc.stderr and "test_batch" in proc.stderr
    assert not marker.exists()
