import attrs
import pytest

from pymtl.balancers.ew import EqualWeightsConfig
from pymtl.balancers.fixed import FixedWeightsConfig
from pymtl.config import (
    BalancerSection,
    RunConfig,
    TrainConfig,
    apply_overrides,
    dump_toml,
    load_config,
    parse_override,
    resolve_config,
)
from pymtl.errors import ConfigError
from pymtl.plugins import get_registry

REGISTRY = get_registry(autoload=False)

RUN_TOML = """\
seed = 3

[balancer]
name = "fixed"
weights = { edge = 50.0, seg = 1.0 }

[train]
epochs = 2
"""


@pytest.fixture
def run_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(RUN_TOML)
    return path


def test_defaults():
    cfg = load_config(None, REGISTRY)
    assert cfg.balancer == BalancerSection(name="ew", options=EqualWeightsConfig())
    assert attrs.evolve(cfg, balancer=RunConfig().balancer) == RunConfig()
    assert cfg.arch is None


def test_defaults_dump_and_reload(tmp_path):
    cfg = load_config(None, REGISTRY)
    path = tmp_path / "defaults.toml"
    path.write_text(dump_toml(cfg, REGISTRY))
    assert load_config(path, REGISTRY) == cfg
    assert '[balancer]\nname = "ew"' in path.read_text()


def test_component_section_resolves_in_two_steps(run_toml):
    cfg = load_config(run_toml, REGISTRY)
    assert cfg.seed == 3
    assert cfg.balancer == BalancerSection(
        name="fixed", options=FixedWeightsConfig(weights={"edge": 50.0, "seg": 1.0})
    )
    assert cfg.train == TrainConfig(epochs=2)


def test_overrides_win_over_the_file(run_toml):
    cfg = load_config(run_toml, REGISTRY, overrides=["balancer.weights.seg=2", "train.lr=0.5"])
    assert cfg.balancer.options.weights == {"edge": 50.0, "seg": 2.0}
    assert cfg.train.lr == 0.5


def test_dump_round_trips(run_toml, tmp_path):
    cfg = load_config(run_toml, REGISTRY, overrides=["balancer.default=0.5", "device='cuda:1'"])
    again_path = tmp_path / "again.toml"
    again_path.write_text(dump_toml(cfg, REGISTRY))
    again = load_config(again_path, REGISTRY)
    assert again == cfg
    assert dump_toml(again, REGISTRY) == dump_toml(cfg, REGISTRY)


def test_unknown_keys_are_reported_with_their_path(run_toml):
    with pytest.raises(ConfigError) as info:
        load_config(run_toml, REGISTRY, overrides=["balancer.alpah=1", "train.epoch=3"])
    msg = str(info.value)
    assert f"in {run_toml}" in msg
    assert "unknown key 'alpah' @ $.balancer.alpah (expected: weights, default)" in msg
    assert "unknown key 'epoch' @ $.train.epoch; did you mean 'epochs'?" in msg


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r"unknown key 'sed' @ \$\.sed; did you mean 'seed'\?"):
        resolve_config({"sed": 1}, REGISTRY)


def test_unknown_component_name():
    with pytest.raises(
        ConfigError,
        match=r"unknown balancer 'pcgard'; did you mean 'pcgrad'\? \(available: .*\) "
        r"@ \$\.balancer\.name",
    ):
        resolve_config({"balancer": {"name": "pcgard"}}, REGISTRY)


def test_section_without_name_means_the_default_component():
    with pytest.raises(ConfigError, match=r"unknown key 'weights' @ \$\.balancer\.weights"):
        resolve_config({}, REGISTRY, overrides=["balancer.weights.seg=2"])


def test_optional_section_needs_a_name():
    with pytest.raises(ConfigError, match=r"missing required key 'name' @ \$\.arch\.name"):
        resolve_config({"arch": {}}, REGISTRY)


def test_bad_values():
    with pytest.raises(ConfigError) as info:
        resolve_config({"train": {"lr": "fast"}}, REGISTRY)
    assert (
        "invalid value @ $.train.lr: could not convert string to float: 'fast' (expected float)"
        in str(info.value)
    )
    with pytest.raises(ConfigError, match=r"'epochs' must be > 0 \(got 0\) @ \$\.train"):
        resolve_config({"train": {"epochs": 0}}, REGISTRY)
    with pytest.raises(ConfigError, match=r"weight 'seg' must be finite and >= 0 \(got -1\.0\)"):
        resolve_config({"balancer": {"name": "fixed", "weights": {"seg": -1.0}}}, REGISTRY)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", REGISTRY)
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = [\n")
    with pytest.raises(ConfigError, match=r"bad\.toml' is not valid TOML"):
        load_config(bad, REGISTRY)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("seed=1", ["seed"], 1),
        ("train.lr = 1e-3", ["train", "lr"], 1e-3),
        ("device=cuda:0", ["device"], "cuda:0"),
        ('device="cpu"', ["device"], "cpu"),
        ("balancer.weights={a = 1.5}", ["balancer", "weights"], {"a": 1.5}),
        ("x.flag=true", ["x", "flag"], True),
        ("x.list=[1, 2]", ["x", "list"], [1, 2]),
    ],
)
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("text", ["seed", "=1", "train..lr=1", ".x=1"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match=r"--set expects section\.key=value"):
        parse_override(text)


def test_override_into_a_value_is_refused():
    with pytest.raises(ConfigError, match=r"'seed' is a value \(1\), not a table"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_overrides_do_not_mutate_the_document():
    doc = {"train": {"lr": 1.0}}
    apply_overrides(doc, ["train.lr=2"])
    assert doc == {"train": {"lr": 1.0}}
