"""User modules that register backbones and optimizers (bocb.plugins): --plugin, a study's
``plugins``, the paper flag they can never claim."""

import pytest
from cli_inproc import bocb

from bocb.optim import get_optimizer_info, list_optimizers
from bocb.zoo import get_backbone_info, list_backbones


def test_plugin_entries_are_registered_and_never_the_papers():
    import user_plugin  # noqa: F401  (registers)

    assert get_backbone_info("UTN").paper is False and get_optimizer_info("USGD").paper is False
    assert get_optimizer_info("USGD").target == "user_plugin:UserSGD"
    assert len(list_backbones(paper=True)) == 20 and len(list_optimizers(paper=True)) == 20


def test_plugin_option_on_bocb_or_on_the_command():
    for argv in (["--plugin", "user_plugin", "zoo", "optimizers", "--format", "csv"],
                 ["--plugin", "user_plugin", "zoo", "show", "user_sgd"]):
        proc = bocb(*argv)
        assert proc.returncode == 0, proc.stderr
        assert "user_sgd" in proc.stdout
    proc = bocb("train", "--plugin", "no_such_plugin_module", "--backbone", "R-18")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("bocb: error: plugin 'no_such_plugin_module' cannot be imported: "
                                   "ModuleNotFoundError: No module named 'no_such_plugin_module'")


def test_a_study_file_names_its_plugin_and_a_bad_one_is_one_line(tmp_path):
    from bocb.study import StudyError, load_study

    body = ('[study]\nname = "p"\ndata = "sample"\ntuning = "fixed"\nplugins = [{}]\nseeds = [0]\n'
            '[[backbones]]\nname = "UTN"\n[[optimizers]]\nname = "USGD"\n')
    (tmp_path / "ok.toml").write_text(body.format('"user_plugin"'))
    assert load_study(tmp_path / "ok.toml").plugins == ("user_plugin",)
    (tmp_path / "bad.toml").write_text(body.format('"user_plugin_missing"'))
    with pytest.raises(StudyError, match=r"\[study\]\.plugins: plugin 'user_plugin_missing' cannot be imported"):
        load_study(tmp_path / "bad.toml")


@pytest.mark.slow
def test_workers_import_the_studys_plugin_and_train_its_entries(tmp_path):
    study = tmp_path / "plugin.toml"
    study.write_text('[study]\nname = "plugin-study"\ndata = "sample"\ntier = "smoke"\ntuning = "fixed"\n'
                     'plugins = ["user_plugin"]\nseeds = [0]\nepochs = 1\nbatch_size = 10\ntrain_per_class = 5\n'
                     'test_per_class = 3\n[[backbones]]\nname = "UTN"\n[[optimizers]]\nname = "USGD"\n')
    store = tmp_path / "store.sqlite"
    proc = bocb("run", study, "--store", store, "--slots", "1", "--device", "cpu", cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from bocb.store import SQLiteStore

    with SQLiteStore(store) as s:
        (row,) = s.trials()
        spec = s.record(row["trial_id"])["spec"]
    assert (row["status"], row["backbone"], row["optimizer"]) == ("done", "UTN", "USGD"), row["error"]
    assert spec["optimizer"]["target"] == "user_plugin:UserSGD"


def test_a_fresh_plugin_is_unknown_without_the_option_and_known_with_it(tmp_path, monkeypatch):
    """A module no test imported before: its names resolve only when --plugin names it, given
    before the command (bocb --plugin M zoo ...) or after it (bocb recommend --plugin M ...)."""
    import uuid

    module = f"plug_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from torch import nn\nfrom bocb.zoo import register_backbone\n"
        f"@register_backbone('{module}_net', group='classical CNN', stages='hierarchical', block='conv', "
        "token_mixer='conv', residual_norm='BN', cifar_stem='none')\n"
        "def net(num_classes, policy, scale, drop_path_rate):\n    return nn.Linear(3, num_classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert bocb("zoo", "show", f"{module}_net").returncode == 2
    assert bocb("recommend", "--backbone", f"{module}_net").returncode == 2
    assert bocb("--plugin", module, "zoo", "show", f"{module}_net").returncode == 0
    proc = bocb("recommend", "--plugin", module, "--backbone", f"{module}_net")
    assert proc.returncode == 0 and "backbones of the same group (classical CNN)" in proc.stdout, proc.stderr
