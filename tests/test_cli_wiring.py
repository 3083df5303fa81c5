"""`hardkuma-rationale explain ...` reaches the explain package's command line."""
import pytest

from hardkuma_attention.cli import main


def test_explain_subcommand_is_dispatched(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["explain", "-h"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "hardkuma-rationale explain" in out and "decoy-digits" in out and "mask" in out


def test_unknown_command_still_fails(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["explian"])
    assert exc.value.code == 2
