"""Reading CIFAR's python batches without letting them run code.

The CIFAR-10/100 "python version" files are pickles, and unpickling calls whatever callables the
file names: a crafted batch in a folder given as ``data`` (or found in ``$BOCB_DATA_DIR`` or the
cache) would run arbitrary code the moment it is read, before any check. :func:`load_batch` uses
an unpickler whose ``find_class`` admits only what a CIFAR batch is made of, and refuses
anything else with one line naming the file and the global it asked for (:class:`UnsafeDataError`).

What a batch needs (checked against batches pickled by Python 2's cPickle, as released, and by
Python 3 with protocols 0-5, NumPy 1 and 2): the array reconstructors
``numpy.core.multiarray._reconstruct`` (``numpy._core`` in NumPy 2), ``numpy.core.numeric
._frombuffer`` (protocol 5), ``numpy.core.multiarray.scalar`` (a NumPy integer label in a
re-pickled batch), the types ``numpy.ndarray`` and ``numpy.dtype``, and
``_codecs.encode`` (how protocols 0-2 spell a ``bytes`` object) restricted to the latin-1
codec. Dicts, lists, strings and numbers need no global. None of these call anything but NumPy's
array construction; an object array's elements go through the same ``find_class``.

Written here because neither torchvision (whose reader calls ``pickle.load``) nor NumPy ship a
restricted CIFAR reader; the alternative, accepting only the official md5s, would refuse the
re-pickled and test batches that bocb also reads.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# The NumPy 2 homes of the reconstructors; NumPy 1 names (numpy.core.*) map onto them, which also
# avoids NumPy 2's deprecation warning for the numpy.core alias.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = np._core.multiarray._reconstruct  # type: ignore[attr-defined]
    _ALLOWED[(_module, "scalar")] = np._core.multiarray.scalar  # type: ignore[attr-defined]
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = np._core.numeric._frombuffer  # type: ignore[attr-defined]


class UnsafeDataError(ValueError):
    """A data file asked to run something other than plain data construction; nothing ran."""


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as pickle protocols 0-2 use it for bytes: latin-1 only."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise _Refused(f"_codecs.encode with codec {encoding!r} (only latin-1 is admitted)")
    return codecs.encode(text, "latin-1", errors)


class _Refused(pickle.UnpicklingError):
    pass


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found


def load_batch(path: Path) -> dict[str, Any]:
    """One CIFAR python batch (a dict) read with the restricted unpickler.

    ``encoding="latin1"`` as torchvision uses, so Python 2's byte strings (keys, the data
    buffer) read back as ``str``. Raises :class:`UnsafeDataError` for a file that names any other
    global (nothing from it is called), and ``ValueError`` for one that is not a batch at all.
    """
    with open(path, "rb") as f:
        try:
            batch = _BatchUnpickler(f, encoding="latin1").load()
        except _Refused as err:
            raise UnsafeDataError(
                f"refusing to read {path}: it asks to call {err}, and a CIFAR batch holds only NumPy arrays, "
                f"lists, strings and numbers (replace it with the official files)") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
            raise ValueError(f"{path} is not a CIFAR python batch: {type(err).__name__}: {err}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} is not a CIFAR python batch: it holds a {type(batch).__name__}, not a dict")
    return batch
