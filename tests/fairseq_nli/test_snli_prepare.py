"""Tests of fairseq_plugins.nli.prepare_data (recipes/snli/prepare.sh: tokenisation, filtering,
errors naming file:line)."""
import json

import pytest

pytest.importorskip("fairseq")

from fairseq_plugins.nli import prepare_data as prep  # noqa: E402


def _row(s1, s2, label):
    return json.dumps({"sentence1": s1, "sentence2": s2, "gold_label": label, "pairID": "x"})


def test_tokenize_lowercases_and_splits_punctuation_and_clitics():
    assert prep.tokenize("A man isn't playing, the dog's ball.") == \
        ["a", "man", "is", "n't", "playing", ",", "the", "dog", "'s", "ball", "."]


def test_prepare_split_drops_dash_and_writes_three_aligned_files(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("\n".join([
        _row("A dog runs.", "An animal moves.", "entailment"),
        _row("A cat.", "A dog.", "-"),
        _row("Two men.", "Nobody.", "contradiction"),
    ]) + "\n")
    counts = prep.prepare_split([str(src)], tmp_path / "out", "train")
    assert counts == {"entailment": 1, "neutral": 0, "contradiction": 1}
    assert (tmp_path / "out/train.input0").read_text().splitlines() == ["a dog runs .", "two men ."]
    assert (tmp_path / "out/train.input1").read_text().splitlines() == ["an animal moves .", "nobody ."]
    assert (tmp_path / "out/train.label").read_text().splitlines() == ["entailment", "contradiction"]


def test_max_examples_subsamples_deterministically(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("\n".join(_row(f"p {i}", f"h {i}", "neutral") for i in range(50)) + "\n")
    prep.prepare_split([str(src)], tmp_path / "a", "train", max_examples=10, seed=3)
    prep.prepare_split([str(src)], tmp_path / "b", "train", max_examples=10, seed=3)
    a = (tmp_path / "a/train.input0").read_text().splitlines()
    assert len(a) == 10 and a == (tmp_path / "b/train.input0").read_text().splitlines()
    assert a != [f"p {i}" for i in range(10)]  # a shuffle, not the head


@pytest.mark.parametrize("line, message", [
    ("{not json", r"d.jsonl:2: malformed JSON"),
    (_row("a", "b", "maybe"), r"d.jsonl:2: unknown gold_label 'maybe'"),
    (json.dumps({"sentence1": "a", "gold_label": "neutral"}), r"d.jsonl:2: missing or non-string field 'sentence2'"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    src = tmp_path / "d.jsonl"
    src.write_text(_row("a", "b", "neutral") + "\n" + line + "\n")
    with pytest.raises(prep.DataError, match=message):
        prep.prepare_split([str(src)], tmp_path / "out", "train")


def test_missing_file_is_an_error_with_exit_code(tmp_path, capsys):
    rc = prep.main(["--out", str(tmp_path), "--split", f"train={tmp_path}/nope.jsonl"])
    assert rc == 2 and "nope.jsonl: no such file" in capsys.readouterr().err


def test_all_splits_are_checked_before_any_file_is_written(tmp_path, capsys):
    good, bad = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    good.write_text(_row("A dog.", "An animal.", "entailment") + "\n")
    bad.write_text(_row("a", "b", "neutral") + "\n{not json\n")
    out = tmp_path / "out"
    rc = prep.main(["--out", str(out), "--split", f"train={good}", "--split", f"valid={bad}"])
    assert rc == 2 and capsys.readouterr().err.strip() == f"error: {bad}:2: malformed JSON (Expecting property name enclosed in double quotes)"
    assert not out.exists()  # the good train split was not written either


def test_non_utf8_input_names_file_and_line(tmp_path, capsys):
    src = tmp_path / "d.jsonl"
    src.write_bytes(_row("a", "b", "neutral").encode() + b"\n" + b'{"sentence1": "caf\xe9"}\n')
    rc = prep.main(["--out", str(tmp_path / "out"), "--split", f"train={src}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {src}:2: not UTF-8 text (byte 0xe9") and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--split", "train"], "--split: expects split=value, got 'train'"),
    (["--split", "train=x.jsonl", "--max-examples", "train=-3"], "--max-examples: train=-3: expected a count >= 0"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert prep.main(["--out", str(tmp_path / "out")] + argv) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
