"""`--set KEY=VALUE`: one setting of a run config changed from the command line."""

import pytest

from rehearsal import ConfigError
from rehearsal.cli.main import main
from rehearsal.runner.config import RunConfig
from rehearsal.runner.overrides import apply_overrides


def test_values_parse_as_json_and_bare_words_as_strings():
    config = apply_overrides(RunConfig(), ["method=random", "epochs=2", 'tasks=["a", "b"]', "seed=3"])
    assert (config.method, config.epochs, config.tasks, config.seed) == ("random", 2, ["a", "b"], 3)


def test_a_dotted_key_reaches_into_a_table():
    config = apply_overrides(RunConfig(), ["replay.ratio=0.5", "replay.mode=random"])
    assert (config.replay.ratio, config.replay.mode) == (0.5, "random")
    assert config.replay.k == RunConfig().replay.k  # the rest of the table is kept


def test_an_absent_gate_table_is_created_by_setting_one_of_its_keys():
    assert apply_overrides(RunConfig(), ["gate.max_drop=0.1"]).gate is not None


def test_field_names_of_a_user_stream_are_settings():
    config = apply_overrides(RunConfig(), ["text_field=utterance", "label_field=intent"])
    assert (config.text_field, config.label_field, config.task_field) == ("utterance", "intent", "task")


@pytest.mark.parametrize(
    ("assignment", "named"),
    [("methd=naive", "'methd'"), ("replay.ratoi=0.5", "'replay.ratoi'"), ("seed.x=1", "'seed.x'")],
)
def test_an_unknown_key_is_a_config_error_naming_it(assignment, named):
    with pytest.raises(ConfigError, match=named):
        apply_overrides(RunConfig(), [assignment])


def test_a_bad_value_is_checked_like_a_file_would_be():
    with pytest.raises(ConfigError, match="'ratio'"):
        apply_overrides(RunConfig(), ["replay.ratio=1.5"])


def test_an_assignment_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(RunConfig(), ["replay.ratio"])


def test_run_set_with_unknown_key_fails_in_one_line_before_loading(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('method = "naive"\n')
    assert main(["run", str(config), "--set", "replay.ratoi=0.5"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "replay.ratoi" in err
