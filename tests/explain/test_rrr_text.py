"""`hardkuma-rationale train --rrr`: on synthetic texts where a decoy token predicts the label in
training and the human rationale leaves it out (A = the decoy), the RRR penalty moves the
classifier's input-gradient mass off the decoy, compared with the same run with the penalty
switched off (``--rrr-lambda1 0``)."""
import json
import random

import pytest
import torch

from hardkuma_attention.explain.rrr_text import RRRTextConfig, RRRTextPenalty, annotation_rows, gradient_mass_report
from hardkuma_attention.cli import main as rationale_main
from hardkuma_attention.rationale.data import Example
from hardkuma_attention.rationale.train import load_pipeline

FILLER = ["the", "a", "film", "plot", "actor", "scene", "was", "and"]
CUES = {"POS": ["good", "great", "fine"], "NEG": ["bad", "awful", "poor"]}
DECOY = {"POS": "xx", "NEG": "yy"}


def synthetic(n, seed):
    """``n`` texts of 8 tokens: a cue word (one of three per class) and a decoy (one token per
    class: a perfect and simpler predictor) at random positions; the human rationale is every
    token but the decoy."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(["POS", "NEG"])
        tokens = [rng.choice(FILLER) for _ in range(8)]
        cue, decoy = rng.sample(range(8), 2)
        tokens[cue] = rng.choice(CUES[label])
        tokens[decoy] = DECOY[label]
        spans = [s for s in ([0, decoy], [decoy + 1, 8]) if s[1] > s[0]]
        rows.append({"id": f"t{i}", "tokens": tokens, "label": label, "rationale": spans, "decoy": decoy})
    return rows


def write_embeddings(path, dim=8):
    """Random frozen word vectors (GloVe text format) so that gradients are w.r.t. fixed inputs."""
    gen = torch.Generator().manual_seed(0)
    words = FILLER + sum(CUES.values(), []) + list(DECOY.values())
    path.write_text("".join(w + " " + " ".join(f"{v:.4f}" for v in torch.randn(dim, generator=gen).tolist()) + "\n"
                            for w in words))


def write(path, rows):
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "decoy"}) + "\n" for r in rows))


def decoy_mass(model_path, rows):
    """``(Σ_e g, Σ_e |g|)`` input-gradient mass shares on the decoy token, means over ``rows``."""
    pipe = load_pipeline(model_path)
    examples = [Example(r["tokens"], r["label"], r["id"], [t == r["decoy"] for t in range(8)]) for r in rows]
    report = gradient_mass_report(pipe, examples)
    return report["grad_mass_inside"], report["abs_grad_mass_inside"], report["accuracy"]


RUNS = {"off": ["--rrr-lambda1", "0"], "sum": [], "per_dimension": ["--rrr-per-dimension"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rrr_text")
    train, dev = tmp / "train.jsonl", tmp / "dev.jsonl"
    write(train, synthetic(240, 0))
    write(dev, synthetic(60, 1))
    write_embeddings(tmp / "vectors.txt")
    # one dev evaluation, at the end (best-on-dev would keep an early checkpoint: dev accuracy is 1 at once)
    common = ["train", "--format", "jsonl", "--train", str(train), "--dev", str(dev), "--gate", "none",
              "--embeddings", str(tmp / "vectors.txt"), "--hidden-size", "16", "--dropout", "0", "--epochs", "8",
              "--batch-size", "16", "--lr", "3e-3", "--pooling", "final", "--eval-every", "120", "--seed", "3",
              "--no-progress", "--html-examples", "0", "--rrr", "--rrr-fraction", "0.5"]
    models = {}
    for name, extra in RUNS.items():
        assert rationale_main(common + extra + ["--out", str(tmp / name)]) == 0
        models[name] = tmp / name / "model.pt"
    return models, synthetic(100, 2), tmp


def test_penalty_moves_gradient_mass_off_the_decoy(trained):
    models, test_rows, tmp = trained
    off, sum_mode, per_dim = (decoy_mass(models[k], test_rows) for k in RUNS)
    print("decoy mass (sum, abs, acc): off", off, "sum", sum_mode, "per-dimension", per_dim)
    assert off[2] > 0.9 and sum_mode[2] > 0.8 and per_dim[2] > 0.8
    assert sum_mode[0] < 0.5 * off[0]  # the penalised quantity: the per-token sum over the embedding
    assert per_dim[1] < 0.5 * off[1]  # every coordinate penalised: the absolute mass drops too
    info = json.loads((tmp / "sum" / "results.json").read_text())["rrr"]
    assert info["annotated_examples"] == 120 and info["lambda1"] > 0
    assert json.loads((tmp / "off" / "results.json").read_text())["rrr"]["lambda1"] == 0


def test_train_restores_denormal_floats(trained):
    # train --rrr flushes denormals while it trains; the process must get them back afterwards
    assert (torch.tensor([1e-40]) * 1.0).item() != 0.0


def test_annotation_rows_is_valid_complement_of_rationale():
    ex = [Example(["a", "b", "c"], "POS", rationale=[False, True, False]), Example(["a", "b"], "NEG", rationale=None)]
    valid = torch.tensor([[True, True, True], [True, True, False]])
    assert annotation_rows(ex, [0, 1], valid).tolist() == [[True, False, True], [True, True, False]]


def test_rrr_requires_a_full_text_classifier_and_rationales(tmp_path):
    rows = synthetic(20, 0)
    write(tmp_path / "t.jsonl", rows)
    base = ["train", "--format", "jsonl", "--train", str(tmp_path / "t.jsonl"), "--holdout", "5",
            "--hidden-size", "4", "--epochs", "1", "--no-progress", "--rrr", "--out", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="gate none"):
        rationale_main(base + ["--gate", "hardkuma"])
    no_rationale = [Example(r["tokens"], r["label"], r["id"]) for r in rows]
    with pytest.raises(ValueError, match="human rationale"):
        RRRTextPenalty(load_pipeline_like(tmp_path), no_rationale, RRRTextConfig())


def load_pipeline_like(tmp_path):
    from hardkuma_attention.rationale import ModelConfig, ObjectiveConfig, Pipeline, RationaleModel, RationaleObjective
    from hardkuma_attention.rationale.embeddings import PAD, UNK, Vocab
    from hardkuma_attention.rationale.train import LabelMap

    words = [PAD, UNK] + FILLER
    model = RationaleModel(ModelConfig(vocab_size=len(words), embed_dim=4, hidden_size=3, num_outputs=2, gate="none"))
    return Pipeline(model, RationaleObjective(ObjectiveConfig(), "none"), Vocab(words), LabelMap(["NEG", "POS"]))
