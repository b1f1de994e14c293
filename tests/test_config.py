"""Every config class goes through one round-trip test and names the field it rejects."""

import pickle

import pytest

from rehearsal.config import ReplayConfig
from rehearsal.errors import ConfigError
from rehearsal.runner.online_config import OnlineConfig

CONFIGS = [
    ReplayConfig(),
    ReplayConfig(ratio=0.5, k=8, mode="retrieval", max_replay_tokens=512, seed=3),
    OnlineConfig(batch_size=4, clip_norm=None, rewarmup_threshold=0.9),
]


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: type(c).__name__ + "-" + str(getattr(c, "mode", ""))
)
def test_config_round_trips(config, tmp_path):
    assert type(config).from_dict(config.to_dict()) == config
    path = tmp_path / "config.json"
    config.save(path)
    assert type(config).load(path) == config
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ratio", 1.0, "'ratio' must be in \\[0, 1\\)"),
        ("ratio", -0.1, "'ratio'"),
        ("random_share", 1.5, "'random_share'"),
        ("k", 0, "'k' must be an int >= 1"),
        ("mode", "nearest", "'mode' must be one of"),
        ("balance", "task", "'balance'"),
        ("max_replay_tokens", -1, "'max_replay_tokens'"),
        ("vector_column", "", "'vector_column'"),
    ],
)
def test_replay_config_names_the_rejected_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ReplayConfig(**{field: value})


def test_unknown_field_is_rejected():
    with pytest.raises(ConfigError, match="unknown ReplayConfig field"):
        ReplayConfig.from_dict({"ratio": 0.2, "ratoi": 0.3})


def test_replay_count_matches_ratio():
    assert ReplayConfig(ratio=0.25).replay_count(24) == 8
    assert ReplayConfig(ratio=0.0).replay_count(24) == 0
    assert ReplayConfig(ratio=0.5, max_replay_examples=3).replay_count(10) == 3
