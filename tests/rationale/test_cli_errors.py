"""Issue #12, validation before work: every bad flag, data file, embeddings file or model file
gives one line ``hardkuma-rationale <cmd>: error: <file:line | --flag>: message``, exit code 2,
no traceback, nothing trained or written (``--debug`` shows the traceback)."""
import argparse
import gzip
import json

import pytest
import torch

from hardkuma_attention.cli import main
from hardkuma_attention.rationale.data import DataFormatError, read_eraser


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(n=6, labels=("pos", "neg")):
    return [{"text": f"w{i} good film", "label": labels[i % len(labels)], "rationale": [[1, 2]]} for i in range(n)]


@pytest.fixture
def data(tmp_path):
    return _jsonl(tmp_path / "train.jsonl", _rows()), _jsonl(tmp_path / "dev.jsonl", _rows(4))


def _train(tmp_path, train, dev, *extra):
    return main(["train", "--format", "jsonl", "--train", str(train), "--dev", str(dev), "--hidden-size", "4",
                 "--epochs", "1", "--no-progress", "--out", str(tmp_path / "out"), *map(str, extra)])


def _one_line(capsys, prefix):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


@pytest.mark.parametrize("flag, value, message", [
    ("--max-length", "-3", "argument --max-length: must be >= 1, got -3"),
    ("--selection", "1.5", "argument --selection: must be <= 1, got 1.5"),
    ("--selection", "nan", "argument --selection: must be finite, got nan"),
    ("--epochs", "0", "argument --epochs: must be >= 1, got 0"),
    ("--batch-size", "0", "argument --batch-size: must be >= 1, got 0"),
    ("--threads", "0", "argument --threads: must be >= 1, got 0"),
    ("--dropout", "1", "argument --dropout: must be < 1, got 1"),
    ("--lr", "0", "argument --lr: must be > 0, got 0"),
    ("--gate", "hardkum", "argument --gate: invalid choice: 'hardkum'"),
    ("--encoder", "gru", "argument --encoder: invalid choice: 'gru'"),
    ("--lasso-measure", "tokens", "argument --lasso-measure: invalid choice: 'tokens'"),
    ("--warmup-gates", "closed", "argument --warmup-gates: invalid choice: 'closed'"),
    ("--selector-dilation", "0", "argument --selector-dilation: must be >= 1, got 0"),
    ("--epochs", "two", "argument --epochs: expected an integer, got 'two'"),
])
def test_numeric_and_choice_flags_are_checked_by_the_parser(tmp_path, data, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exc:
        _train(tmp_path, *data, flag, value)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"hardkuma-rationale train: error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_empty_dev_file_is_refused_before_training(tmp_path, data, capsys):
    (tmp_path / "dev.jsonl").write_text("\n")
    assert _train(tmp_path, *data) == 2
    _one_line(capsys, f"hardkuma-rationale train: error: {tmp_path / 'dev.jsonl'}: no examples")
    assert not (tmp_path / "out").exists()


def test_mixed_label_types_are_refused_with_file_line(tmp_path, data, capsys):
    rows = _rows(4, labels=(1, 0))
    rows[2]["label"] = "1"
    _jsonl(tmp_path / "train.jsonl", rows)
    assert _train(tmp_path, *data) == 2
    _one_line(capsys, f"hardkuma-rationale train: error: {tmp_path / 'train.jsonl'}:3: label '1' is a str, "
                      "earlier labels are int")


def test_one_class_training_set_is_refused(tmp_path, data, capsys):
    _jsonl(tmp_path / "train.jsonl", _rows(4, labels=("pos",)))
    assert _train(tmp_path, *data) == 2
    _one_line(capsys, f"hardkuma-rationale train: error: {tmp_path / 'train.jsonl'}: one class only ('pos')")


@pytest.mark.parametrize("split", ["dev", "test"])
def test_unseen_dev_or_test_label_is_found_before_training(tmp_path, data, capsys, split):
    rows = _rows(4)
    rows[1]["label"] = "maybe"
    other = _jsonl(tmp_path / f"{split}_bad.jsonl", rows)
    train, dev = data
    args = (train, other) if split == "dev" else (train, dev, "--test", other)
    assert _train(tmp_path, *args) == 2
    _one_line(capsys, f"hardkuma-rationale train: error: {other}:2: label 'maybe' not among the training labels")
    assert not (tmp_path / "out").exists()


def test_float_rationale_spans_are_refused_not_truncated(tmp_path, data, capsys):
    rows = _rows(4)
    rows[3]["rationale"] = [[0.5, 2]]
    _jsonl(tmp_path / "train.jsonl", rows)
    assert _train(tmp_path, *data) == 2
    _one_line(capsys, f"hardkuma-rationale train: error: {tmp_path / 'train.jsonl'}:4: rationale must be")


def test_non_utf8_input_names_file_and_line(tmp_path, data, capsys):
    (tmp_path / "train.jsonl").write_bytes(b'{"text": "a b", "label": "pos"}\n{"text": "caf\xe9", "label": "neg"}\n')
    assert _train(tmp_path, *data) == 2
    _one_line(capsys, f"hardkuma-rationale train: error: {tmp_path / 'train.jsonl'}:2: not UTF-8 text (byte 0xe9")


def test_debug_shows_the_traceback(tmp_path, data):
    (tmp_path / "dev.jsonl").write_text("")
    with pytest.raises(DataFormatError, match="no examples"):
        _train(tmp_path, *data, "--debug")


@pytest.mark.parametrize("content, message", [
    ("3 2\ngood 1 0\nbad 0 1\n", ":1: a word2vec header ('3 2')"),
    ("good 1 0 0\nbad 0 1\n", ":2: expected 3 values (the first row's dimension), got 2"),
    ("good 1 x\n", ":1: non-numeric vector entry"),
    (None, ":1: cannot read the gzip stream"),
    ("\n\n", ": no vectors found"),
])
def test_glove_problems_name_the_file(tmp_path, data, capsys, content, message):
    glove = tmp_path / "glove.txt.gz"
    if content is None:
        glove.write_bytes(b"this is not gzip")
    else:
        with gzip.open(glove, "wt") as f:
            f.write(content)
    assert _train(tmp_path, *data, "--embeddings", glove) == 2
    _one_line(capsys, f"hardkuma-rationale train: error: {glove}{message}")


def test_glove_expected_dimension_fails_at_the_first_row_naming_the_flag(tmp_path):
    """``read_glove(dim=...)`` (the fairseq NLI loader's --embed-dim) stops at the first vector row."""
    from hardkuma_attention.rationale.embeddings import read_glove

    glove = tmp_path / "glove.txt"
    glove.write_text("\ngood 1 0 0\nbad 0 1 x\n", encoding="utf-8")  # row 3 would fail later
    with pytest.raises(DataFormatError, match=r"glove\.txt:2: vectors have 3 values, --embed-dim is 4$"):
        read_glove(glove, dim=4, dim_flag="--embed-dim")
    words, vectors = read_glove(glove, words={"good"}, dim=3)
    assert words == ["good"] and vectors.tolist() == [[1.0, 0.0, 0.0]]


@pytest.mark.parametrize("kind", ["empty", "truncated", "foreign-pickle", "foreign-dict", "missing"])
def test_corrupt_or_foreign_model_is_one_line_naming_it(tmp_path, capsys, kind):
    model = tmp_path / "model.pt"
    if kind == "empty":
        model.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"format": "hardkuma-rationale/1", "x": torch.ones(100)}, model)
        model.write_bytes(model.read_bytes()[:200])
    elif kind == "foreign-pickle":  # e.g. a fairseq checkpoint: holds a non-tensor object
        import argparse

        torch.save({"args": argparse.Namespace(arch="x")}, model)
    elif kind == "foreign-dict":
        torch.save({"model": {"w": torch.ones(2)}}, model)
    assert main(["predict", "--model", str(model), "a b"]) == 2
    line = _one_line(capsys, "hardkuma-rationale predict: error: ")
    assert str(model) in line and "weights_only" not in line


def test_eraser_empty_evidence_spans_are_skipped_and_counted(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "d1").write_text("a fine film\nreally good\n")
    ev = [[{"docid": "d1", "start_token": 3, "end_token": 3}], [{"docid": "d1", "start_token": 1, "end_token": 3}],
          [{"docid": "d1", "start_token": 5, "end_token": 5}]]
    _jsonl(tmp_path / "test.jsonl", [{"annotation_id": "d1", "classification": "POS", "evidences": ev}])
    (ex,) = read_eraser(tmp_path / "test.jsonl")
    assert ex.rationale == [False, True, True, False, False] and ex.meta["empty_evidence_spans"] == 2
    _jsonl(tmp_path / "bad.jsonl", [{"annotation_id": "d1", "classification": "POS",
                                     "evidences": [[{"docid": "d1", "start_token": 6, "end_token": 6}]]}])
    with pytest.raises(DataFormatError, match=r"bad.jsonl:1: evidence span \[6, 6\) outside document"):
        read_eraser(tmp_path / "bad.jsonl")


def test_evaluate_refuses_unknown_labels_and_empty_files(tmp_path, data, capsys):
    train, dev = data
    assert _train(tmp_path, train, dev, "--html-examples", "0") == 0
    capsys.readouterr()
    rows = _rows(3)
    rows[2]["label"] = "meh"
    bad = _jsonl(tmp_path / "eval.jsonl", rows)
    args = ["evaluate", "--model", str(tmp_path / "out" / "model.pt"), "--format", "jsonl", "--out-dir", str(tmp_path / "ev")]
    assert main(args + ["--data", str(bad)]) == 2
    _one_line(capsys, f"hardkuma-rationale evaluate: error: {bad}:3: label 'meh' not among the model's labels")
    (tmp_path / "empty.jsonl").write_text("")
    assert main(args + ["--data", str(tmp_path / "empty.jsonl")]) == 2
    _one_line(capsys, f"hardkuma-rationale evaluate: error: {tmp_path / 'empty.jsonl'}: no examples")
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("argv, message", [
    (["explain", "mask", "--model", "m.pt", "--data", "d.jsonl", "--out", "o", "--limit", "-1"],
     "argument --limit: must be >= 0, got -1"),
    (["explain", "rrr-eval", "--models", "a=m.pt", "--data", "d.jsonl", "--out", "o", "--fraction", "0"],
     "argument --fraction: must be > 0, got 0"),
    (["explain", "decoy-digits", "--out", "o", "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
])
def test_explain_flags_are_range_checked(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_explain_bad_model_is_one_line(tmp_path, data, capsys):
    (tmp_path / "m.pt").write_bytes(b"")
    rc = main(["explain", "mask", "--model", str(tmp_path / "m.pt"), "--data", str(data[1]), "--format", "jsonl",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    _one_line(capsys, f"hardkuma-rationale explain mask: error: {tmp_path / 'm.pt'}: not a readable")


@pytest.mark.parametrize("extra, message", [
    (["--controller", "paper"], "--selection-gradient open needs --selection-measure decoded"),
    (["--ab-range", "10", "0.1"], "--controller/--gate-preset: ab_range must satisfy 0 < lo < hi"),
    (["--support", "0.1", "1.1"], "--controller/--gate-preset: support must satisfy l < 0 < 1 < r"),
    (["--lambda-max", "1e-13"], "--controller/--gate-preset: need 0 < lambda_min <= lambda_max"),
])
def test_inconsistent_controller_or_gate_settings_fail_before_any_work(tmp_path, data, capsys, extra, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")  # an earlier run: --overwrite must not delete it
    assert _train(tmp_path, *data, "--overwrite", *extra) == 2
    assert message in _one_line(capsys, "hardkuma-rationale train: error: --")
    assert (out / "results.json").read_text() == "{}"


def test_choice_flags_take_their_values_from_the_config_constants():
    """One list of allowed values per setting: the parser's choices are the tuples the configs check."""
    from hardkuma_attention.cli import build_parser
    from hardkuma_attention.rationale import models, objectives

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {opt: a for a in sub.choices["train"]._actions for opt in a.option_strings}
    expected = {"--gate": models.GATES, "--selector": models.SELECTORS, "--pooling": models.POOLINGS,
                "--encoder": models.ENCODERS, "--selection-gradient": objectives.SELECTION_GRADIENTS,
                "--lasso-measure": objectives.LASSO_MEASURES, "--warmup-gates": objectives.WARMUP_GATES}
    for flag, values in expected.items():
        assert tuple(flags[flag].choices) == values, flag


@pytest.mark.parametrize("extra, message", [
    (["--selector-dilation", "2"], "--selector-dilation (selector_dilation) must be >= 1, and 1 unless --encoder cnn"),
    (["--encoder", "cnn", "--cnn-kernel", "4"], "cnn_kernel (--cnn-kernel) must be odd"),
])
def test_inconsistent_model_settings_name_the_setting_before_any_work(tmp_path, data, capsys, extra, message):
    assert _train(tmp_path, *data, *extra) == 2
    line = _one_line(capsys, "hardkuma-rationale train: error: ")
    assert message in line and "--controller/--gate-preset" not in line
    assert not (tmp_path / "out").exists()
