"""Text explanations on a tiny rationale-trainer pipeline: metrics plumbing, AUPRC, AOPC, CLI."""
import json

import pytest
import torch

from hardkuma_attention.explain.text import METHODS, aopc, auprc, average_precision, evaluate_methods, method_label, token_scores
from hardkuma_attention.rationale import Example, ModelConfig, ObjectiveConfig, Pipeline, RationaleModel, RationaleObjective
from hardkuma_attention.rationale.embeddings import PAD, UNK, Vocab
from hardkuma_attention.rationale.train import LabelMap


def tiny_pipeline():
    torch.manual_seed(0)
    words = [PAD, UNK, "good", "bad", "the", "film", "a"]
    cfg = ModelConfig(vocab_size=len(words), embed_dim=6, hidden_size=5, num_outputs=2, gate="none",
                      dropout=0.0, pooling="max")
    model = RationaleModel(cfg)
    with torch.no_grad():
        model.embed.weight[0].zero_()
    model.eval()
    return Pipeline(model, RationaleObjective(ObjectiveConfig(), "none"), Vocab(words), LabelMap(["NEG", "POS"]))


def examples():
    texts = [("the good film", [False, True, False], "POS"), ("a bad film the", [False, True, False, False], "NEG"),
             ("good good film", [True, True, False], "POS")]
    return [Example(t.split(), y, id=str(i), rationale=r) for i, (t, r, y) in enumerate(texts)]


def test_auprc_by_hand():
    # ranking 0.9 (gold), 0.5 (not), 0.1 (gold): AP = (1/1 + 2/3) / 2
    assert auprc([[0.9, 0.5, 0.1]], [[True, False, True]]) == pytest.approx((1 + 2 / 3) / 2)


def test_average_precision_matches_scikit_learn_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    for n in (2, 5, 17, 40):
        for _ in range(20):
            gold = (torch.rand(n, generator=gen) < 0.3).tolist()
            gold[int(torch.randint(n, (1,), generator=gen))] = True
            scores = torch.randint(0, 4, (n,), generator=gen).float().tolist()  # many ties
            assert average_precision(scores, gold) == pytest.approx(metrics.average_precision_score(gold, scores))


def test_average_precision_by_hand_with_a_tie():
    # threshold 0.9 takes both tied tokens (one gold): P = 1/2, R = 1/2; then 0.1: P = 2/3, R = 1
    assert average_precision([0.9, 0.9, 0.1], [True, False, True]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    with pytest.raises(ValueError, match="at least one gold"):
        average_precision([0.3, 0.2], [False, False])


def test_aopc_is_mean_over_fractions():
    valid = torch.ones(1, 10, dtype=torch.bool)
    scores = torch.arange(10.0).flip(0).unsqueeze(0)  # token 0 ranked first

    def predict_proba(keep):  # p(class 0) = 0.9 if token 0 kept else 0.1
        p0 = torch.where(keep[:, 0], torch.tensor(0.9), torch.tensor(0.1))
        return torch.stack([p0, 1 - p0], -1)
    r = aopc(predict_proba, valid, scores, fractions=(0.1, 0.5))
    assert r["aopc_comprehensiveness"] == pytest.approx([0.8])  # removing top tokens always removes token 0
    assert r["aopc_sufficiency"] == pytest.approx([0.0])


@pytest.mark.parametrize("method", METHODS)
def test_methods_run_and_score_valid_tokens_only(method):
    from hardkuma_attention.explain.mask import MaskConfig

    pipe = tiny_pipeline()
    batch = next(pipe.batches(examples(), 3))
    target = torch.zeros(3, dtype=torch.long)
    s = token_scores(method, pipe, batch.tokens, batch.mask, target, MaskConfig(max_steps=3))
    assert s.shape == batch.tokens.shape
    assert (s[~batch.mask] == 0).all() and torch.isfinite(s).all()


def test_input_x_gradient_matches_autograd():
    pipe = tiny_pipeline()
    batch = next(pipe.batches(examples(), 3))
    target = torch.tensor([1, 0, 1])
    s = token_scores("input-x-gradient", pipe, batch.tokens, batch.mask, target)
    emb = pipe.model.embed(batch.tokens).detach().requires_grad_(True)
    logp = torch.log_softmax(pipe.model.classifier(emb, batch.mask.float(), batch.mask), -1)
    logp.gather(1, target.unsqueeze(1)).sum().backward()
    assert torch.allclose(s, (emb * emb.grad).sum(-1) * batch.mask, atol=1e-6)


def test_cli_mask_writes_results(tmp_path):
    pipe = tiny_pipeline()
    pipe.save(tmp_path / "model.pt")
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"text": " ".join(e.tokens), "label": e.label,
                                          "rationale": [[1, 2]]}) for e in examples()))
    from hardkuma_attention.cli import explain_main as main
    from hardkuma_attention.rationale.data import FORMATS

    if "jsonl" not in FORMATS:
        pytest.skip("no generic jsonl reader")
    rc = main(["mask", "--model", str(tmp_path / "model.pt"), "--data", str(data), "--format", "jsonl",
               "--max-steps", "3", "--out", str(tmp_path / "out"), "--no-progress",
               "--rationale-model", str(tmp_path / "model.pt")])
    assert rc == 0
    res = json.loads((tmp_path / "out" / "explain_results.json").read_text())
    labels = [method_label(m) for m in METHODS]
    assert "occlusion-w1-remove" in labels
    assert [r["method"] for r in res["rows"]] == labels + ["rationale model (own classifier)"]
    assert res["rows"][-1]["fraction"] == 1.0  # gate "none": the whole text is its rationale
    for r in res["rows"]:
        assert 0.0 <= r["token_f1"] <= 1.0 and 0.0 <= r["auprc"] <= 1.0
    assert (tmp_path / "out" / "mask.html").is_file()


def test_eval_mode_restores_every_flag_also_on_error():
    from hardkuma_attention.explain.models import eval_mode

    model = tiny_pipeline().model
    model.train()
    model.classifier.eval()  # a mixed state: restored as it was, not by model.train(True)
    before = [m.training for m in model.modules()]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before


def test_full_text_logits_is_the_classifier_with_every_token_kept():
    from hardkuma_attention.explain.models import full_text_logits

    pipe = tiny_pipeline()
    batch = next(pipe.batches(examples(), 3))
    got = full_text_logits(pipe.model, pipe.model.embed(batch.tokens), batch.mask)
    want = pipe.model.classify(batch.tokens, batch.mask, torch.ones_like(batch.mask, dtype=torch.float32))
    assert got.shape == (3, 2) and torch.equal(got, want)


def record_modes(model):
    """Forward hook on the classifier: the ``training`` flag of each call."""
    seen = []
    model.classifier.register_forward_hook(lambda mod, args, out: seen.append(mod.training))
    return seen


@pytest.mark.parametrize("method", METHODS)
def test_token_scores_run_in_eval_mode_and_restore_the_mode(method):
    from hardkuma_attention.explain.mask import MaskConfig

    pipe = tiny_pipeline()
    pipe.model.train()
    seen = record_modes(pipe.model)
    batch = next(pipe.batches(examples(), 3))
    token_scores(method, pipe, batch.tokens, batch.mask, torch.zeros(3, dtype=torch.long), MaskConfig(max_steps=2))
    assert seen and not any(seen)
    assert pipe.model.training and all(m.training for m in pipe.model.modules())


def test_evaluate_methods_and_gradient_mass_report_restore_the_mode():
    from hardkuma_attention.explain.mask import MaskConfig
    from hardkuma_attention.explain.rrr_text import gradient_mass_report

    pipe = tiny_pipeline()
    pipe.model.train()
    seen = record_modes(pipe.model)
    evaluate_methods(pipe, examples(), ["input-x-gradient", "mask"], batch_size=2, progress=False,
                     mask_config=MaskConfig(max_steps=2))
    gradient_mass_report(pipe, examples(), batch_size=2)
    assert seen and not any(seen)  # faithfulness and AOPC included: dropout off throughout
    assert pipe.model.training and all(m.training for m in pipe.model.modules())
