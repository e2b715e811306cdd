import pytest

from conceptlens import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["wrold"]) == 2
    assert "unknown command 'wrold'" in capsys.readouterr().err


def test_config_typo_stops_with_the_key_named(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["world", "world.sead=1"])
    assert exit_.value.code == 2
    assert "world.sead" in capsys.readouterr().err


def test_command_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["world", "--help"])
    assert exit_.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_a_job_that_loses_rows_exits_1_with_the_reason(capsys):
    from conceptlens.pipeline.shards import IncompleteShards

    def run(cfg):
        raise IncompleteShards("shard 3 expected 100 rows, got 97")

    assert cli.run_command("embed", "", [], run, str) == 1
    assert "conceptlens embed: failed: shard 3 expected 100 rows, got 97" in capsys.readouterr().err


def test_a_job_that_fails_its_checks_reports_then_exits_1_with_the_reason(capsys):
    def run(cfg):
        raise cli.ChecksFailed("scenario 'fog' planted no failure", {"accuracy": 0.9})

    assert cli.run_command("world", "", [], run, lambda result: f"accuracy {result['accuracy']}") == 1
    out = capsys.readouterr()
    assert "accuracy 0.9" in out.out and "conceptlens world: failed: scenario 'fog' planted no failure" in out.err
