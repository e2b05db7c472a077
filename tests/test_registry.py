"""Lookups: aliases, and the one-line error that names close valid choices."""

import pytest

from bocb.optim import get_optimizer_info
from bocb.registry import Registry, UnknownNameError
from bocb.zoo import get_backbone_info
from cli_inproc import bocb


def test_aliases_find_the_same_record():
    assert get_backbone_info("R-50") is get_backbone_info("resnet50")
    assert get_backbone_info("cnx_t") is get_backbone_info("convnext_tiny")
    assert get_optimizer_info("SGD-M") is get_optimizer_info("sgd_m")
    assert get_optimizer_info("adamw") is get_optimizer_info("AdamW")


@pytest.mark.parametrize(
    "lookup, name, expected",
    [
        (get_backbone_info, "resnet5", "resnet50"),
        (get_backbone_info, "ConvNext-T", "convnext_tiny"),
        (get_optimizer_info, "adamw2", "adamw"),
        (get_optimizer_info, "lamb_", "lamb"),
    ],
)
def test_unknown_name_names_close_choices(lookup, name, expected):
    with pytest.raises(UnknownNameError) as err:
        lookup(name + "zz")
    message = str(err.value)
    assert "\n" not in message
    assert expected in err.value.close or expected in message
    assert "valid:" in message


def test_duplicate_registration_is_refused():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Rec:
        name: str

    reg: Registry[Rec] = Registry("thing")
    reg.add(Rec("a"), aliases=("A1",))
    with pytest.raises(ValueError):
        reg.add(Rec("a"))
    with pytest.raises(ValueError):
        reg.add(Rec("b"), aliases=("a1",))


def test_filter_by_unknown_field_is_an_error():
    from bocb.zoo import BACKBONES

    with pytest.raises(ValueError, match="valid fields"):
        BACKBONES.filter(colour="red")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["zoo", "show", "resnet51"], "resnet50"),
        (["zoo", "show", "adamx"], "adam"),
        (["zoo", "backbones", "--group", "transformers"], "modern: transformer"),
        (["zoo", "optimizers", "--category", "e"], "extra"),
    ],
)
def test_cli_bad_name_is_one_line_with_choices(args, expected):
    proc = bocb(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bocb: error:")
    assert expected in lines[0]


def test_a_resolved_name_finds_its_record_whether_or_not_it_was_resolved_before():
    from dataclasses import dataclass

    from bocb.registry import Registry

    @dataclass(frozen=True)
    class Rec:
        name: str

    reg = Registry("thing", on_miss=lambda n: Rec("ext:" + n.removeprefix("ext:")) if n.startswith(("ext:", "x")) else None)
    assert reg.get("ext:xa").name == "ext:xa"
    assert reg.get("xa").name == "ext:xa"  # a second spelling of a record already resolved
    assert reg.get("xb").name == "ext:xb" and reg.get("ext:xb").name == "ext:xb"
    assert "other" not in reg and reg.names() == ["ext:xa", "ext:xb"]
