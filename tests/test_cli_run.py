"""`rehearsal run`: errors in a run config are one line on stderr and exit 1."""

from rehearsal.cli.main import main


def test_run_with_unknown_config_field_fails_in_one_line(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('method = "hybrid"\nmethd = "naive"\n')
    assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "methd" in err


def test_run_with_missing_config_fails_in_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "absent.toml")]) == 1
    assert capsys.readouterr().err.startswith("rehearsal: error:")
