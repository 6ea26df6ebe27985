"""Config validation: every bad input is one line naming the key, exit code 2, nothing written."""

from pathlib import Path

import pytest
import yaml

from flows import synth as synth_flow_module
from flows.pipeline import all_sections
from r3.config import BaseConfig, ScheduleConfig
from r3.data.synth import SynthConfig
from r3.params import ParamsError, apply_overrides, read_params, section

PROJECT_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


def test_project_params_validate():
    params = read_params(PROJECT_PARAMS)
    assert section(params, "base", BaseConfig).canvas == 32
    assert section(params, "synth", SynthConfig).heldout_per_tag == 40


def test_override_parses_yaml_values_and_nested_keys():
    params = apply_overrides({"synth": {"train_per_tag": 5}}, ["synth.train_per_tag=7", "synth.heldout_fraction=0.5"])
    assert params["synth"] == {"train_per_tag": 7, "heldout_fraction": 0.5}


def test_configs_are_frozen():
    cfg = SynthConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.train_per_tag = 3  # type: ignore[misc]


BAD_INPUTS = [
    ({"synth": {"trian_per_tag": 10}}, [], "synth.trian_per_tag: unknown key"),
    ({"synth": {"train_per_tag": "many"}}, [], "synth.train_per_tag: Input should be a valid integer"),
    ({"synth": {"heldout_fraction": 1.5}}, [], "synth.heldout_fraction: Input should be less than 1"),
    ({"base": {"seed": -1}}, [], "base.seed: Input should be greater than or equal to 0"),
    ({"base": {"canvas": 8}}, [], "base.canvas: Input should be greater than or equal to 16"),
    ({"sytnh": {}}, [], "unknown section 'sytnh'"),
    ({}, ["synth.train_per_tag"], "expected section.key=value"),
    ({}, ["nosuch.key=1"], "unknown params section 'nosuch'"),
    ({}, ["synth.train_per_tag=[1, 2"], "value is not valid YAML"),
    ({"synth": [1, 2]}, [], "section 'synth' must be a mapping"),
]


@pytest.mark.parametrize(("override_params", "overrides", "message"), BAD_INPUTS)
def test_bad_params_exit_2_with_one_line_and_write_nothing(
    tmp_path, monkeypatch, capsys, override_params, overrides, message
):
    params = yaml.safe_load(PROJECT_PARAMS.read_text())
    params.update(override_params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    argv = [arg for o in overrides for arg in ("-S", o)]
    assert synth_flow_module.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_missing_params_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert synth_flow_module.main(["--params", "nope.yaml"]) == 2
    assert "nope.yaml: params file not found" in capsys.readouterr().err


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 0\n synth: [\n")
    with pytest.raises(ParamsError, match=r"params.yaml:\d+: not valid YAML"):
        read_params(path)


def differences(a: dict, b: dict, prefix: str = "") -> dict[str, tuple]:
    """Dotted key -> (a's value, b's value) wherever two nested dicts differ."""
    out = {}
    for key in sorted(a.keys() | b.keys()):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out |= differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out[f"{prefix}{key}"] = (x, y)
    return out


SECTIONS = {**all_sections(), "schedule": ScheduleConfig}
"""Every params.yaml section and its config."""


@pytest.mark.parametrize("name", SECTIONS)
def test_params_yaml_holds_exactly_the_config_defaults(name):
    """One source of defaults: each params.yaml section, validated, equals its config's defaults."""
    params = read_params(PROJECT_PARAMS)
    assert name in params, f"params.yaml has no '{name}' section"
    model = SECTIONS[name]
    in_yaml = section(params, name, model).model_dump(mode="json")
    assert differences(in_yaml, model().model_dump(mode="json")) == {}, "params.yaml (left) vs defaults (right)"
