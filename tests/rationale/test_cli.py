"""CLI smoke run: train -> predict -> evaluate -> plot on a tiny generic jsonl with a tiny GloVe file."""
import gzip
import json

import pytest

from hardkuma_attention.cli import main

from synthetic import marker_examples


def write_jsonl(path, examples):
    with open(path, "w") as f:
        for ex in examples:
            pos = ex.rationale.index(True)
            f.write(json.dumps({"text": " ".join(ex.tokens), "label": "pos" if ex.label else "neg",
                                "rationale": [[pos, pos + 1]]}) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    write_jsonl(d / "train.jsonl", marker_examples(300, seed=0))
    write_jsonl(d / "dev.jsonl", marker_examples(60, seed=1))
    with gzip.open(d / "glove.txt.gz", "wt") as f:  # 4-d vectors for a few words, the rest random
        f.write("good 1 0 0 0\nbad -1 0 0 0\nw1 0 1 0 0\nunseen 0 0 1 0\n")
    rc = main(["train", "--format", "jsonl", "--train", str(d / "train.jsonl"), "--dev", str(d / "dev.jsonl"),
               "--test", str(d / "dev.jsonl"), "--embeddings", str(d / "glove.txt.gz"), "--no-freeze-embeddings",
               "--hidden-size", "8", "--epochs", "2", "--batch-size", "20", "--selection", "0.2",
               "--lasso", "0.3", "--out", str(d / "run"), "--no-progress", "--html-examples", "5"])
    assert rc == 0
    return d


def test_train_outputs(trained):
    run = trained / "run"
    for name in ["model.pt", "history.jsonl", "results.json", "predictions.dev.jsonl", "predictions.test.jsonl",
                 "rationales.test.html"]:
        assert (run / name).is_file(), name
    res = json.loads((run / "results.json").read_text())
    assert res["data"]["n_train"] == 300 and res["data"]["embed_dim"] == 4
    assert res["model_config"]["gate"] == "hardkuma" and res["objective_config"]["lasso"] == 0.3
    for key in ["accuracy", "selected", "token_f1", "iou_f1", "comprehensiveness", "sufficiency"]:
        assert 0.0 <= res["test"][key] <= 1.0 or key in ("comprehensiveness", "sufficiency"), key
    rec = json.loads((run / "predictions.test.jsonl").read_text().splitlines()[0])
    assert rec["prediction"] in ("pos", "neg") and len(rec["gates"]) == len(rec["tokens"]) == 10
    assert rec["gold_rationale_spans"] and isinstance(rec["rationale_spans"], list)
    assert (run / "rationales.test.html").read_text().count('<div class="ex">') == 5


def test_predict_prints_highlight(trained, capsys):
    out_jsonl = trained / "pred.jsonl"
    assert main(["predict", "--model", str(trained / "run" / "model.pt"), "--no-color", "--jsonl", str(out_jsonl),
                 "w1 w2 good w3", "bad w4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0].split()[0] in ("pos", "neg")
    assert "w3" in lines[0] and len(out_jsonl.read_text().splitlines()) == 2


def test_evaluate(trained, tmp_path):
    assert main(["evaluate", "--model", str(trained / "run" / "model.pt"), "--format", "jsonl",
                 "--data", str(trained / "dev.jsonl"), "--out-dir", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 60 and "token_f1" in metrics


def test_plot(trained, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "plot.png"
    assert main(["plot", str(trained / "run" / "results.json"), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_table(trained, capsys):
    assert main(["table", str(trained / "run" / "results.json"), "--columns", "accuracy,token_f1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    res = json.loads((trained / "run" / "results.json").read_text())
    assert lines[0].startswith("| run | gate | target | test accuracy % | test token_f1 %")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:3] == ["run", "hardkuma", "0.2"]
    assert cells[3] == f"{100 * res['test']['accuracy']:.1f}" and cells[4] == f"{100 * res['test']['token_f1']:.1f}"


def test_bad_data_reports_file_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
    rc = main(["train", "--format", "jsonl", "--train", str(bad), "--dev", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2 and "bad.jsonl:2:" in capsys.readouterr().err
