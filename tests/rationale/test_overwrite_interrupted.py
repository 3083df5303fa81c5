"""Issue #12: `train --overwrite` interrupted midway leaves no old results next to the new run, and
`table` / `plot` refuse a results.json that is older than the training files beside it."""
import importlib
import json
import shutil

import pytest

from hardkuma_attention.cli import main

from synthetic import marker_examples


def _write(path, examples):
    path.write_text("".join(json.dumps({"text": " ".join(e.tokens), "label": e.label}) + "\n" for e in examples))
    return path


def _args(d, out, *extra):
    return ["train", "--format", "jsonl", "--train", str(_write(d / "train.jsonl", marker_examples(60, seed=0))),
            "--dev", str(_write(d / "dev.jsonl", marker_examples(20, seed=1))), "--test", str(d / "dev.jsonl"),
            "--hidden-size", "4", "--epochs", "1", "--batch-size", "20", "--html-examples", "1", "--no-progress",
            "--out", str(out), *extra]


def test_interrupted_overwrite_leaves_no_old_results(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(_args(tmp_path, out)) == 0
    old_results = tmp_path / "old_results.json"
    shutil.copy2(out / "results.json", old_results)
    assert main(["table", str(out / "results.json")]) == 0
    capsys.readouterr()

    train_module = importlib.import_module("hardkuma_attention.rationale.train")  # the package exports a `train` function
    real_train = train_module.train

    def killed_after_training(*args, **kwargs):  # the new run dies before writing its results
        real_train(*args, **kwargs)
        raise SystemExit(137)

    monkeypatch.setattr(train_module, "train", killed_after_training)
    with pytest.raises(SystemExit):
        main(_args(tmp_path, out, "--overwrite", "--seed", "7"))
    left = sorted(p.name for p in out.iterdir())
    assert left == ["checkpoint_last.pt", "history.jsonl", "model.pt"]  # the new run's files only
    assert main(["table", str(out / "results.json")]) == 2
    err = capsys.readouterr().err
    assert err == f"hardkuma-rationale table: error: no such results file: {out / 'results.json'}\n"

    # A folder mixed by other means (an old results.json copied back): table and plot refuse it.
    shutil.copy2(old_results, out / "results.json")
    for argv in (["table", str(out / "results.json")], ["plot", str(out / "results.json"), "--out", str(tmp_path / "p.png")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{out / 'results.json'}: older than {out / 'checkpoint_last.pt'}" in err or \
            f"{out / 'results.json'}: older than {out / 'history.jsonl'}" in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_overwrite_with_bad_data_keeps_the_old_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tmp_path, out)) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    args = _args(tmp_path, out, "--overwrite")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "w1 good", "label": 5}) + "\n")
    args[args.index("--dev") + 1] = str(tmp_path / "bad.jsonl")
    capsys.readouterr()
    assert main(args) == 2
    assert "bad.jsonl:1: label 5 not among the training labels" in capsys.readouterr().err
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}  # nothing deleted


def test_table_refuses_a_file_that_is_not_results_json(tmp_path, capsys):
    bad = tmp_path / "results.json"
    bad.write_text('{"name": "x",\n oops}')
    assert main(["table", str(bad)]) == 2
    assert capsys.readouterr().err == (f"hardkuma-rationale table: error: {bad}:2: not a results.json of "
                                       "hardkuma-rationale train (JSONDecodeError)\n")
    bad.write_text("[1, 2]")
    assert main(["table", str(bad)]) == 2
    assert "no model_config" in capsys.readouterr().err


def test_plot_unknown_metric_is_a_flag_error(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    good = tmp_path / "results.json"
    good.write_text(json.dumps({"name": "r", "model_config": {"gate": "hardkuma"}, "test": {"accuracy": 0.5, "selected": 0.2}}))
    assert main(["plot", str(good), "--out", str(tmp_path / "p.png"), "--metric", "f1"]) == 2
    assert capsys.readouterr().err == "hardkuma-rationale plot: error: --metric: run 'r' has no test.f1\n"
    assert main(["plot", str(good), "--out", str(tmp_path / "p.png")]) == 0 and (tmp_path / "p.png").stat().st_size > 0
