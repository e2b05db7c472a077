import os

# Under pytest-xdist every worker (and every process a test starts: `bocb run` and its slots)
# would otherwise use all cores for torch and BLAS; two workers on two cores then fight over
# them, which made CPU-heavy tests 3-4x slower than alone. One thread each; set before torch
# is imported so that its thread pools start that way too.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import pytest  # noqa: E402 - after the thread settings above
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
