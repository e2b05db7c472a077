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


# The longest tests start first, so that under pytest-xdist they run beside the short ones instead
# of after them (the fault-injection test alone takes 4-5 minutes; started last, it made the whole
# suite wait for it). Longest first, measured; the rest keep their order.
LONGEST_FIRST = (
    "test_fault_injection.py::test_sigkill_at_random_moments_loses_nothing_and_leaves_nothing",
    "test_detection.py::test_detection_fine_tuning_learns_the_shapes",
    "test_study_run.py::test_kill_9_mid_study_then_rerun_finishes_every_trial_once",
    "test_study_run.py::test_two_runners_at_once_run_each_trial_once",
    "test_probe.py::test_a_probe_answers_within_its_budget_and_continues_where_it_stopped",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item):
        name = item.nodeid.rsplit("/", 1)[-1]
        return rank.get(name, len(rank))

    items.sort(key=key)  # stable: every other test keeps its place
