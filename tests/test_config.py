"""The config schema: validate(), load_config(), flatten(), and every conf/ group option."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import yaml

from irtune.compose import compose
from irtune.config import LOSSES, Config, flatten, load_config, validate
from irtune.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def _group_options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file of every config group folder under conf/."""
    return [
        (group.name, option.stem)
        for group in sorted(p for p in CONF.iterdir() if p.is_dir())
        for option in sorted(group.glob("*.yaml"))
    ]


@pytest.fixture
def conf_copy(tmp_path: Path) -> Path:
    """A throwaway repo root holding a copy of conf/, so composing never touches params.yaml."""
    shutil.copytree(CONF, tmp_path / "conf")
    return tmp_path


def test_defaults_validate() -> None:
    """An empty mapping validates to the dataclass defaults."""
    assert validate({}) == Config()


def test_composed_defaults_validate(conf_copy: Path) -> None:
    """conf/ with no overrides composes into a params file that load_config accepts."""
    cfg = load_config(compose([], root=conf_copy))
    assert cfg.loss.name == "gist"  # the default recipe, cpu_best
    assert cfg == load_config(compose(["experiment=cpu_best"], root=conf_copy))
    assert cfg.index.type in ("flat", "hnsw", "ivf")


def test_the_full_recipe_is_the_schemas_seed_recipe(conf_copy: Path) -> None:
    """`experiment=full` composes the seed recipe: the schema's own defaults (MNRL over every
    pair, 256 tokens, lr 2e-5, no feedback), for the dataset conf/ selects."""
    cfg = load_config(compose(["experiment=full"], root=conf_copy))
    seed = Config()
    for section in ("loss", "prepare", "train", "retrieve"):
        assert getattr(cfg, section) == getattr(seed, section), section
    assert cfg.encode.max_seq_length == seed.encode.max_seq_length


def test_unknown_key_names_the_key() -> None:
    """A misspelt key fails and the message names it in full."""
    with pytest.raises(ConfigError, match=r"train\.batch_sze"):
        validate({"train": {"batch_sze": 8}})


@pytest.mark.parametrize(
    "uri", ["http://alice:s3cret-pw@127.0.0.1:5001", "https://alice@mlflow.example.org"]
)
def test_a_tracking_uri_with_credentials_fails_without_showing_them(uri: str) -> None:
    """tracking.uri holding a user (and password) fails, naming the key and MLflow's
    variables, and the message masks what it refuses to record."""
    with pytest.raises(ConfigError, match=r"'tracking\.uri' embeds credentials") as info:
        validate({"tracking": {"uri": uri}})
    message = str(info.value)
    assert "alice" not in message and "s3cret" not in message, message
    assert "***@" in message and "MLFLOW_TRACKING_PASSWORD" in message, message


def test_the_tracking_uri_variable_with_credentials_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """$MLFLOW_TRACKING_URI (used when tracking.uri is empty) gets the same check, naming the
    variable; URIs without credentials pass as they are."""
    from irtune.config import TrackingConfig
    from irtune.tracking import tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bob:hunter2-pw@10.0.0.5:5001")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI embeds credentials") as info:
        tracking_uri(TrackingConfig())
    assert "hunter2" not in str(info.value)
    for fine in ("http://10.0.0.5:5001", "sqlite:////data/a@b/mlflow.db", "file:///tmp/mlruns"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", fine)
        assert tracking_uri(TrackingConfig()) == fine
        assert validate({"tracking": {"uri": fine}}).tracking.uri == fine


def test_unknown_section_names_the_section() -> None:
    """A whole unknown top-level section fails, naming it."""
    with pytest.raises(ConfigError, match="trian"):
        validate({"trian": {"epochs": 1}})


def test_wrong_type_names_the_key() -> None:
    """A string where an int belongs fails, naming the key."""
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        validate({"train": {"batch_size": "abc"}})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("loss.name", "nope"),
        ("index.type", "annoy"),
        ("evaluate.test", "wilcoxon"),
        ("train.precision", "fp8"),
    ],
)
def test_bad_choice_fails(key: str, value: str) -> None:
    """A value outside a key's choices fails, naming the key and the bad value."""
    section, name = key.split(".")
    with pytest.raises(ConfigError) as err:
        validate({section: {name: value}})
    assert key in str(err.value)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"train": {"epochs": -1}}, "train.epochs"),
        ({"prepare": {"max_pairs": -5}}, "prepare.max_pairs"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"retrieve": {"top_k": 0}}, "retrieve.top_k"),
        ({"prepare": {"mine_range_min": 50, "mine_range_max": 50}}, "prepare.mine_range_max"),
        ({"evaluate": {"permutations": 0}}, "evaluate.permutations"),
        ({"evaluate": {"bootstrap_resamples": -1}}, "evaluate.bootstrap_resamples"),
        # 39 sign flips cannot give a two-sided p below 2/40 = alpha: no verdict, ever.
        ({"evaluate": {"permutations": 39}}, "evaluate.permutations"),
        ({"sweep": {"seeds": [42, 43, 42]}}, "sweep.seeds"),
        ({"train": {"devices": 0}}, "train.devices"),
        # batch_size is the global batch: 2 processes cannot hold equal slices of 31 rows.
        ({"train": {"devices": 2, "batch_size": 31}}, "train.batch_size"),
    ],
)
def test_out_of_range_fails(raw: dict, key: str) -> None:
    """Negative epochs (and other out-of-range counts) fail, naming the key."""
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate(raw)


def test_zero_epochs_is_allowed() -> None:
    """epochs=0 (the zero-shot pass-through) is in range."""
    assert validate({"train": {"epochs": 0}}).train.epochs == 0


def test_overrides_land_in_the_typed_config() -> None:
    """Valid values are merged onto the defaults and converted to the field types."""
    cfg = validate({"train": {"batch_size": "16", "lr": 1e-4}, "index": {"type": "hnsw"}})
    assert cfg.train.batch_size == 16
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.index.type == "hnsw"
    assert cfg.train.epochs == Config().train.epochs


def test_load_config_reports_the_file(tmp_path: Path) -> None:
    """load_config names the params file in its errors."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"batch_sze": 4}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"params\.yaml.*train\.batch_sze"):
        load_config(path)


def test_load_config_missing_file(tmp_path: Path) -> None:
    """A missing params file is a ConfigError naming it, not a FileNotFoundError."""
    with pytest.raises(ConfigError, match=r"nothere\.yaml"):
        load_config(tmp_path / "nothere.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "train: [unclosed\n"])
def test_load_config_rejects_non_mapping_and_bad_yaml(tmp_path: Path, text: str) -> None:
    """A YAML list or unparsable YAML fails with a ConfigError."""
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"params\.yaml"):
        load_config(path)


def test_flatten_keys() -> None:
    """flatten() gives one 'section.key' entry per schema field, with the field's value."""
    cfg = validate({"train": {"batch_size": 12}})
    flat = flatten(cfg)
    expected = {
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(Config)
        for f in dataclasses.fields(getattr(cfg, section.name))
    }
    assert set(flat) == expected
    assert flat["train.batch_size"] == 12
    assert flat["loss.name"] == "mnrl"
    assert all(key.count(".") == 1 for key in flat)


def test_every_loss_has_a_config_option() -> None:
    """Each loss the schema accepts can be chosen from conf/loss/ (and no file is extra)."""
    options = {p.stem for p in (CONF / "loss").glob("*.yaml")}
    assert options == set(LOSSES)


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"a.b": value} for every leaf of a nested mapping."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _option_values(group: str, option: str) -> dict[str, object]:
    """The dotted keys an option file sets, honouring its ``# @package`` header."""
    path = CONF / group / f"{option}.yaml"
    text = path.read_text(encoding="utf-8")
    body = yaml.safe_load(text) or {}
    body.pop("defaults", None)  # group selections (e.g. override /loss), not values
    body.pop("hydra", None)  # a sweep's axes: Hydra's, never composed into params
    if "@package _global_" not in text:
        body = {group: body}
    return _leaves(body)


@pytest.mark.parametrize(("group", "option"), _group_options())
def test_every_group_option_composes_and_validates(
    conf_copy: Path, group: str, option: str
) -> None:
    """Selecting each option of each conf/ group composes with Hydra, passes the schema, and
    every value the option file sets reaches the composed config."""
    cfg = load_config(compose([f"{group}={option}"], root=conf_copy))
    values = _option_values(group, option)
    assert values, f"conf/{group}/{option}.yaml sets nothing"
    flat = flatten(cfg)
    for key, value in values.items():
        assert flat[key] == value, key
    if group == "loss":
        assert cfg.loss.name == option
