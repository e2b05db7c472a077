"""Commands that build no model import neither torch nor timm (bocb.lazy), and the shipped tables
that make this possible (bocb.sizes, bocb.optim.signatures) agree with the live code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stores import study_in_store

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "timm", "pytorch_optimizer")
ZOO_MODULES = ("bocb.zoo.classical", "bocb.zoo.modern", "bocb.zoo.metaformer")  # the registered zoo
BUILT_IN_LIBRARIES = ("torch", "timm", "pytorch_optimizer", "sophia_opt", "schedulefree")  # bocb's own zoo

PROBE = """
import json, sys
from bocb.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as stop:
    rc = stop.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
sys.stderr.write("\\nLIGHT " + json.dumps({{"rc": rc, "heavy": heavy}}) + "\\n")
"""


def _run_light(tmp_path: Path, *argv: str) -> dict:
    env = {**os.environ, "BOCB_CACHE_DIR": str(tmp_path / "cache"), "BOCB_DATA_DIR": str(tmp_path / "nodata")}
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("LIGHT ")]
    assert line, done.stderr[-2000:]
    return json.loads(line[-1].removeprefix("LIGHT "))


@pytest.fixture(scope="module")
def study_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("light")
    study_file, _, store = study_in_store(folder, "light", ["R-50", "DeiT-S"], ["SGD-M", "AdamW"])
    return study_file, store


@pytest.mark.parametrize("argv", [
    ("paper", "table", "--format", "csv"),
    ("paper", "hparams", "--json"),
    ("paper", "protocol", "--format", "json"),
    ("zoo", "optimizers", "--json"),
    ("zoo", "backbones", "--json"),
    ("zoo", "show", "AdamW"),
    ("zoo", "show", "R-50"),
    # CIFAR-100 is not on this machine: the plan sizes it from its known sizes, without data.
    ("plan", str(REPO / "studies" / "paper-cifar100.toml"), "--json"),
], ids=lambda a: " ".join(a[:3]).replace(str(REPO) + "/", ""))
def test_reading_commands_import_no_torch(tmp_path, argv):
    found = _run_light(tmp_path, *argv)
    assert found == {"rc": 0, "heavy": []}


def test_store_commands_import_no_torch(tmp_path, study_store):
    study_file, store = study_store
    for argv in (("status", study_file, "--store", store, "--json"),
                 ("export", study_file, "--store", store, "--out", tmp_path / "out.csv")):
        found = _run_light(tmp_path, *map(str, argv))
        assert found == {"rc": 0, "heavy": []}, argv


def test_commands_on_a_store_with_results_import_no_torch(tmp_path):
    """A real store (tests/fixtures: 5 finished trials): status, an export and its analysis."""
    import shutil

    store = tmp_path / "store.sqlite"
    shutil.copy(Path(__file__).parent / "fixtures" / "store-v2.sqlite", store)
    for argv in (("status", "--store", store, "--json"), ("export", "--store", store, "--out", tmp_path / "all.csv")):
        found = _run_light(tmp_path, *map(str, argv))
        assert found == {"rc": 0, "heavy": []}, argv
    # The fixture holds one pair twice (two studies): analyze refuses in one line, still light.
    assert _run_light(tmp_path, "analyze", str(tmp_path / "all.csv")) == {"rc": 2, "heavy": []}
    assert len((tmp_path / "all.csv").read_text().splitlines()) == 6  # a header and the 5 trials


def test_a_training_command_does_import_torch(tmp_path):
    """The probe itself can fail: building a model makes torch show up."""
    found = _run_light(tmp_path, "zoo", "show", "timm:resnet10t")
    assert "torch" in found["heavy"]


# -- the shipped tables ---------------------------------------------------------------------------


def test_optimizer_signature_table_matches_the_classes():
    from bocb.optim import library_version, list_optimizers
    from bocb.optim import signatures

    listed = 0
    for info in list_optimizers():
        if info.library not in BUILT_IN_LIBRARIES:  # a plug-in another test registered in this process
            continue
        shipped = signatures.from_table(info.name, info.target, library_version(info.library))
        assert shipped is not None, f"{info.name}: not in signatures.json (run scripts/signatures_table.py)"
        live = {k: list(v) if isinstance(v, tuple) else v for k, v in signatures.from_class(info.load_class()).items()}
        assert list(shipped) == list(live), info.name
        assert shipped == live, info.name
        listed += 1
    assert listed >= 20


def test_resolving_from_the_table_gives_the_same_specs_and_trial_ids(monkeypatch):
    """The table only saves imports: every optimizer resolves to the same spec with it and without."""
    from bocb.optim import list_optimizers, resolve_optimizer
    from bocb.optim import signatures

    names = [info.name for info in list_optimizers() if info.library in BUILT_IN_LIBRARIES]
    with_table = {n: resolve_optimizer(n).to_json() for n in names}
    monkeypatch.setattr(signatures, "_table", lambda: {})
    without = {n: resolve_optimizer(n).to_json() for n in names}
    assert with_table == without


def test_a_stale_table_entry_is_not_used():
    from bocb.optim import get_optimizer_info, library_version
    from bocb.optim import signatures

    adamw = get_optimizer_info("adamw")
    version = library_version(adamw.library)
    assert signatures.from_table("adamw", adamw.target, version) is not None
    assert signatures.from_table("adamw", adamw.target, "0.0.0-not-installed") is None
    # Another class registered under the zoo's name (a user's replacement) is inspected, not looked up.
    assert signatures.from_table("adamw", "torch.optim:SGD", version) is None


def test_cifar_folders_are_torchvision_s():
    from bocb.data.readers import CIFAR_FOLDERS, cifar_class

    assert {k: cifar_class(k).base_folder for k in CIFAR_FOLDERS} == CIFAR_FOLDERS


def test_sizes_table_covers_every_registered_backbone():
    from bocb import sizes
    from bocb.zoo import list_backbones, resolve_backbone

    for info in list_backbones():
        if info.builder.__module__ not in ZOO_MODULES:  # a plug-in or external model another test registered
            continue
        for scale in info.scales:
            for policy in info.policies:
                spec = resolve_backbone(info.name, num_classes=100, policy=policy, scale=scale)
                assert sizes.lookup(spec.to_dict(), "flops") is not None, (info.name, scale, policy)


@pytest.mark.parametrize("name,scale,policy,classes", [
    ("resnet50", "paper", "cifar", 100), ("resnet50", "paper", "cifar", 1000),
    ("deit_small", "tiny", "cifar", 10), ("convnext_tiny", "tiny", "upsample", 200),
    ("caformer_s12", "tiny", "cifar", 37),
])
def test_sizes_table_equals_a_live_count(name, scale, policy, classes):
    """Counted on the built model now, including head sizes the table never counted (1000, 200):
    the linear extrapolation from 10 and 100 classes is exact."""
    from bocb import compute, sizes
    from bocb.zoo import count_params, resolve_backbone

    spec = resolve_backbone(name, num_classes=classes, policy=policy, scale=scale)
    assert sizes.lookup(spec.to_dict(), "flops") == compute.count_forward_flops(spec.to_json())
    params, state = compute.count_state(spec.to_json())
    assert sizes.lookup(spec.to_dict(), "params") == params == count_params(spec)
    assert sizes.lookup(spec.to_dict(), "state") == state


def test_a_model_outside_the_table_is_counted():
    from bocb import compute, sizes
    from bocb.zoo import resolve_backbone

    spec = resolve_backbone("resnet18", num_classes=10, policy="cifar", scale="tiny").to_dict()
    spec["input_size"] = 48  # no entry: counted on the model instead
    assert sizes.lookup(spec, "flops") is None
    assert compute._forward_flops(json.dumps(spec, sort_keys=True)) > 0


def test_plain_dict_equals_asdict_on_every_spec_kind():
    """bocb.plain replaces dataclasses.asdict in the specs' to_dict: the same values, so the same ids."""
    import dataclasses

    from bocb.data import DatasetSpec
    from bocb.optim import list_optimizers, resolve_optimizer
    from bocb.plain import plain_dict
    from bocb.recipes import RECIPES
    from bocb.zoo import list_backbones, resolve_backbone

    objects = [*RECIPES.values(), *(r.augment for r in RECIPES.values()),
               *(r.imagenet for r in RECIPES.values() if r.imagenet is not None),
               *(resolve_optimizer(o.name) for o in list_optimizers() if o.library in BUILT_IN_LIBRARIES),
               *(resolve_backbone(b.name) for b in list_backbones() if b.builder.__module__ in ZOO_MODULES),
               DatasetSpec("sample"), DatasetSpec("folder", "/x", image_size=64, classes=(1, 2))]
    for obj in objects:
        assert plain_dict(obj) == dataclasses.asdict(obj), type(obj).__name__
    spec = resolve_optimizer("adamw")
    copied = plain_dict(spec)
    copied["args"]["betas"][0] = 0.5  # containers are copies: the spec's own args are untouched
    assert spec.args["betas"][0] == 0.9
