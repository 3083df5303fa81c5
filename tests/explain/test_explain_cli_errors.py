"""Issue #12, explain CLI: inputs checked before any work (one line, exit 2, no traceback; --debug
shows it), a non-empty --out refused unless --overwrite, and --overwrite removes the command's own
earlier outputs first so that no folder mixes two runs."""
import json

import pytest

from hardkuma_attention.cli import explain_main as main
from hardkuma_attention.rationale.data import DataFormatError

from test_text import examples, tiny_pipeline


@pytest.fixture
def files(tmp_path):
    tiny_pipeline().save(tmp_path / "model.pt")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join(e.tokens), "label": e.label, "rationale": [[1, 2]]}) + "\n"
                            for e in examples()))
    return tmp_path, tmp_path / "model.pt", data


def _mask(model, data, out, *extra):
    return ["mask", "--model", str(model), "--data", str(data), "--format", "jsonl", "--max-steps", "2",
            "--methods", "input-x-gradient", "--no-progress", "--out", str(out), *extra]


def _rrr(model, data, out, *extra):
    return ["rrr-eval", "--models", f"m={model}", "--data", str(data), "--format", "jsonl", "--no-progress",
            "--out", str(out), *extra]


def test_non_empty_out_refused_and_overwrite_clears_own_outputs(files, capsys):
    d, model, data = files
    out = d / "out"
    assert main(_mask(model, data, out)) == 0
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert set(before) == {"explain_results.json", "input-x-gradient.html"}
    (out / "occlusion-w1-remove.html").write_text("an earlier run's page")  # not written by the next run
    before["occlusion-w1-remove.html"] = (out / "occlusion-w1-remove.html").stat().st_mtime_ns
    assert main(_mask(model, data, out)) == 2
    err = capsys.readouterr().err
    assert err == (f"hardkuma-rationale explain mask: error: --out: {out} is not empty (an earlier run?): "
                   "--overwrite replaces it\n")
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}  # untouched
    (out / "notes.txt").write_text("mine")
    assert main(_mask(model, data, out, "--overwrite")) == 2
    assert "also holds files this command does not write (notes.txt)" in capsys.readouterr().err
    assert (out / "occlusion-w1-remove.html").is_file()
    (out / "notes.txt").unlink()
    (out / ".explain_results.json.abc.tmp").write_text("half-written")
    assert main(_mask(model, data, out, "--overwrite")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["explain_results.json", "input-x-gradient.html"]
    assert main(_rrr(model, data, d / "rrr")) == 0 and (d / "rrr" / "rrr_eval.json").is_file()
    assert main(_rrr(model, data, d / "rrr")) == 2
    assert main(_rrr(model, data, d / "rrr", "--overwrite")) == 0


def _bad_cases(d, model, data):
    """(name, argv, expected start of the message after 'error: ')."""
    latin = d / "latin1.jsonl"
    latin.write_bytes(data.read_bytes() + '{"text": "caf\u00e9", "label": "POS"}\n'.encode("latin-1"))
    empty = d / "empty.jsonl"
    empty.write_text("")
    unseen = d / "unseen.jsonl"
    unseen.write_text(data.read_text() + json.dumps({"text": "the film", "label": "MIXED"}) + "\n")
    corrupt = d / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    (d / "m2").mkdir()
    (d / "m2" / "model.pt").write_bytes(model.read_bytes())
    (d / "m2" / "results.json").write_text("{")
    out = d / "new"
    return [
        ("missing data", _mask(model, d / "nope.jsonl", out), "no such data file"),
        ("non-utf8 data", _mask(model, latin, out), f"{latin}:4: "),
        ("empty data", _mask(model, empty, out), f"{empty}: no examples"),
        ("unseen label", _mask(model, unseen, out), f"{unseen}:4: label 'MIXED' not among the model's labels"),
        ("corrupt model", _mask(corrupt, data, out), f"{corrupt}: not a readable"),
        ("missing model", _mask(d / "none.pt", data, out), "no such model file"),
        ("corrupt rationale model", _mask(model, data, out, "--rationale-model", str(corrupt)), f"{corrupt}: "),
        ("rrr-eval NAME=PATH", ["rrr-eval", "--models", str(model), "--data", str(data), "--format", "jsonl",
                                "--out", str(out)], "--models: takes NAME=PATH"),
        ("rrr-eval corrupt model", _rrr(corrupt, data, out), f"{corrupt}: not a readable"),
        ("rrr-eval unseen label", _rrr(model, unseen, out), f"{unseen}:4: label 'MIXED'"),
        ("rrr-eval bad results.json", _rrr(d / "m2" / "model.pt", data, out), f"{d / 'm2' / 'results.json'}:1: not a results.json"),
        ("out is a file", _mask(model, data, data), f"--out: {data} is a file"),
    ]


def test_bad_inputs_one_line_exit_2_before_any_output(files, capsys):
    d, model, data = files
    for name, argv, start in _bad_cases(d, model, data):
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        prog = f"hardkuma-rationale explain {argv[0]}: error: "
        assert err.startswith(prog + start) and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert not (d / "new").exists(), name  # checked before any work or output


def test_parser_refuses_bad_flags(files, capsys):
    d, model, data = files
    for flag, value in [("--batch-size", "0"), ("--threads", "0"), ("--max-steps", "0"), ("--format", "csv")]:
        with pytest.raises(SystemExit) as exc:
            main(_mask(model, data, d / "new", flag, value))
        assert exc.value.code == 2
        assert f"argument {flag}: " in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["decoy-digits", "--out", str(d / "new"), "--epochs", "0"])
    assert exc.value.code == 2 and "argument --epochs: must be >= 1, got 0" in capsys.readouterr().err


def test_debug_shows_the_error(files):
    d, model, data = files
    (d / "empty.jsonl").write_text("")
    with pytest.raises(DataFormatError):
        main(_mask(model, d / "empty.jsonl", d / "o", "--debug"))
