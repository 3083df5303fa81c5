"""Unit tests of the NLI plugin: decomposable attention model, attend steps, criterion."""
import gzip
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq.data import Dictionary  # noqa: E402
from fairseq.logging import metrics  # noqa: E402

import fairseq_plugins  # noqa: E402,F401  (registers everything)
from fairseq_plugins.nli.attend import HardKumaAttend, SoftmaxAttend  # noqa: E402
from fairseq_plugins.nli.criterion import NLICrossEntropyConfig, NLICrossEntropyCriterion  # noqa: E402
from fairseq_plugins.nli.model import DecomposableAttentionConfig, DecomposableAttentionModel  # noqa: E402
from hardkuma_attention import collect_attention_stats  # noqa: E402

from tests.hardkuma_reference import gate_attention  # noqa: E402

WORDS = "a man dog is playing guitar outside sleeping the cat".split()


def _task():
    d = Dictionary()
    for w in WORDS:
        d.add_symbol(w)
    labels = Dictionary()
    for w in ("entailment", "neutral", "contradiction"):
        labels.add_symbol(w)
    return SimpleNamespace(source_dictionary=d, target_dictionary=labels, cfg=SimpleNamespace(num_classes=3))


def _model(attention="hardkuma", **kw):
    torch.manual_seed(0)
    cfg = DecomposableAttentionConfig(attention=attention, embed_dim=16, hidden_dim=8, dropout=0.0, **kw)
    return DecomposableAttentionModel.build_model(cfg, _task())


def _batch(d, sentences, pad_to=None):
    rows = [d.encode_line(s, add_if_not_exist=False, append_eos=False).long() for s in sentences]
    n = pad_to or max(len(r) for r in rows)
    out = torch.full((len(rows), n), d.pad(), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _inputs(pad_extra=0):
    d = _task().source_dictionary
    prem = ["a man is playing guitar", "the cat is sleeping"]
    hyp = ["a man is outside", "a dog"]
    p = _batch(d, prem, max(len(s.split()) for s in prem) + pad_extra)
    h = _batch(d, hyp, max(len(s.split()) for s in hyp) + pad_extra)
    return p, h


@pytest.mark.parametrize("attention", ["softmax", "hardkuma"])
def test_shapes_and_padding_invariance(attention):
    model = _model(attention).eval()
    p, h = _inputs()
    logits, extra = model(premise=p, hypothesis=h)
    assert logits.shape == (2, 3)
    assert extra["attn"].shape == (2, p.size(1) + 1, h.size(1) + 1)  # NULL row and column
    assert torch.equal(extra["premise_mask"][:, 0], torch.ones(2, dtype=torch.bool))
    # Extra padding must not change anything (masking of attention and of the sum pooling).
    p2, h2 = _inputs(pad_extra=3)
    logits2, extra2 = model(premise=p2, hypothesis=h2)
    assert torch.allclose(logits, logits2, atol=1e-5)
    assert (extra2["attn"][:, :, -3:] == 0).all() and (extra2["attn"][:, -3:, :] == 0).all()


def test_hardkuma_masked_cells_zero_and_stats_count_valid_cells():
    model = _model("hardkuma").train()
    p, h = _inputs(pad_extra=2)
    with collect_attention_stats() as stats:
        _, extra = model(premise=p, hypothesis=h)
    mask = extra["premise_mask"].unsqueeze(2) & extra["hypothesis_mask"].unsqueeze(1)
    assert (extra["attn"][~mask] == 0).all()
    total = stats.total("nli")
    assert total.cells.item() == mask.sum().item()
    assert total.nonzero.item() == (extra["attn"] != 0).sum().item()
    assert 0 < total.expected_l0.item() < 1 and total.l0_sum.requires_grad


def test_hardkuma_eval_is_deterministic_and_training_samples():
    model = _model("hardkuma")
    p, h = _inputs()
    model.eval()
    a1 = model(premise=p, hypothesis=h)[1]["attn"]
    a2 = model(premise=p, hypothesis=h)[1]["attn"]
    assert torch.equal(a1, a2)
    model.train()
    torch.manual_seed(1)
    s1 = model(premise=p, hypothesis=h)[1]["attn"]
    s2 = model(premise=p, hypothesis=h)[1]["attn"]
    assert not torch.equal(s1, s2)


@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
def test_one_gate_matrix_used_in_both_directions(normalize):
    torch.manual_seed(0)
    attend = HardKumaAttend(8, 8, 0.0, normalize=normalize).eval()
    p, h = torch.randn(2, 4, 8), torch.randn(2, 3, 8)
    mask = torch.ones(2, 4, 3, dtype=torch.bool)
    mask[1, 3, :] = False
    mask[1, :, 2] = False
    out = attend(p, h, mask)
    nonzero = out.matrix != 0
    # The same cells are open in both directions, whatever the normalisation.
    assert torch.equal(out.to_hypothesis != 0, nonzero)
    assert torch.equal(out.to_premise.transpose(1, 2) != 0, nonzero)
    if normalize == "none":
        assert torch.equal(out.to_premise, out.matrix.transpose(1, 2))
    else:
        rows = out.to_hypothesis.sum(-1)[nonzero.any(-1)]
        assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


@pytest.mark.parametrize("normalize", ["none", "sum", "softmax"])
@pytest.mark.parametrize("mlp", ["separate", "shared"])
def test_hardkuma_attend_eval_matches_formulas_and_reports_stats(normalize, mlp):
    """Eval alignment == the formulas (tests/hardkuma_reference.py) on the attend MLP features:
    score_a = F_a(p) F_a(h)^T, score_b = F_b(p) F_b(h)^T, one gate matrix z normalised per direction."""
    torch.manual_seed(0)
    attend = HardKumaAttend(8, 8, 0.0, normalize=normalize, mlp=mlp, stats_key="nli").double().eval()
    g = torch.Generator().manual_seed(3)
    p, h = (torch.randn(3, n, 8, generator=g, dtype=torch.float64) * 8 for n in (4, 5))  # large scores: 0s and 1s
    mask = torch.ones(3, 4, 5, dtype=torch.bool)
    mask[1, 3, :] = False  # padded premise word
    mask[1, :, 4] = False  # padded hypothesis word
    mask[2] = False  # nothing real: all zero, no NaN
    with collect_attention_stats() as stats:
        out = attend(p, h, mask)
    fa, fb = attend.f_ab(torch.cat([p, h], dim=1))
    sa = fa[:, :4] @ fa[:, 4:].transpose(1, 2)
    sb = fb[:, :4] @ fb[:, 4:].transpose(1, 2)
    args = (attend.support, attend.ab_clamp)
    z, l0 = gate_attention(sa, sb, mask, "none", *args)
    to_h, _ = gate_attention(sa, sb, mask, normalize, *args)
    to_p, _ = gate_attention(sa.transpose(1, 2), sb.transpose(1, 2), mask.transpose(1, 2), normalize, *args)
    assert torch.allclose(out.matrix, z, atol=1e-10) and torch.equal(out.matrix == 0, z == 0)
    assert torch.allclose(out.to_hypothesis, to_h, atol=1e-10)
    assert torch.allclose(out.to_premise, to_p, atol=1e-10)
    assert (z[mask] != 0).any() and (z[mask] == 0).any() and (out.matrix[2] == 0).all()
    total = stats.total("nli")
    assert torch.allclose(total.l0_sum.double(), l0)
    assert total.cells.item() == mask.sum().item() and total.nonzero.item() == (z != 0).sum().item()


def test_softmax_attend_rows_sum_to_one_and_empty_rows_are_zero():
    torch.manual_seed(0)
    attend = SoftmaxAttend(8, 8, 0.0)
    mask = torch.ones(1, 3, 4, dtype=torch.bool)
    mask[0, 2, :] = False  # a padded premise word
    out = attend(torch.randn(1, 3, 8), torch.randn(1, 4, 8), mask)
    assert torch.allclose(out.to_hypothesis[0, :2].sum(-1), torch.ones(2))
    assert (out.to_hypothesis[0, 2] == 0).all() and not torch.isnan(out.to_premise).any()


def test_pretrained_embeddings_frozen_and_unit_norm(tmp_path):
    glove = tmp_path / "vec.txt.gz"
    with gzip.open(glove, "wt", encoding="utf-8") as f:
        f.write("man " + " ".join(["3"] * 16) + "\n")
        f.write("zebra " + " ".join(["1"] * 16) + "\n")
    model = _model("softmax", embeddings_path=str(glove))
    d = _task().source_dictionary
    w = model.embed_tokens.weight
    assert not w.requires_grad
    assert torch.allclose(w[d.index("man")], torch.full((16,), 0.25))
    assert torch.allclose(w[d.index("dog")].norm(), torch.tensor(1.0))
    assert (w[d.pad()] == 0).all()
    bad = tmp_path / "bad.txt"
    bad.write_text("man 1 2 3\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: .*3 values"):
        _model("softmax", embeddings_path=str(bad))


def _sample():
    p, h = _inputs()
    return {
        "net_input": {"premise": p, "hypothesis": h},
        "target": torch.tensor([1, 2]),
        "ntokens": int((p != 1).sum() + (h != 1).sum()),
    }


def test_criterion_logs_accuracy_l0_nonzero_lambda_and_updates_lambda_in_training_only():
    task = _task()
    cfg = NLICrossEntropyConfig(l0_target=0.1, l0_lagrange_lr=1.0, l0_lagrange_alpha=0.5)
    crit = NLICrossEntropyCriterion(cfg, task)
    model = _model("hardkuma")
    model.train(), crit.train()
    loss, size, log = crit(model, _sample())
    assert size == 2
    assert loss.item() > float(log["loss"])  # the penalty is in the optimised loss, not in the logged CE
    loss.backward()
    assert model.attend.f_ab.second_b.weight.grad is not None  # gradients reach the b-scores (via the L0 term)
    lam_after_train = crit.l0.multiplier
    assert lam_after_train > 1e-4
    model.eval(), crit.eval()
    with torch.no_grad():
        _, _, vlog = crit(model, _sample())
    assert crit.l0.multiplier == lam_after_train and "l0_penalty" not in vlog
    with metrics.aggregate() as agg:
        NLICrossEntropyCriterion.reduce_metrics([log, log])
        out = agg.get_smoothed_values()
    for key in ("loss", "accuracy", "l0", "nz", "lambda"):
        assert key in out
    assert 0 <= out["accuracy"] <= 100 and 0 <= out["nz"] <= 1


def test_softmax_model_criterion_has_no_l0_metrics():
    crit = NLICrossEntropyCriterion(NLICrossEntropyConfig(l0_target=0.1), _task())
    loss, _, log = crit(_model("softmax").train(), _sample())
    assert "l0_sum" not in log and loss.item() == pytest.approx(float(log["loss"]))


def test_state_dict_round_trip_gives_same_eval_outputs(tmp_path):
    model = _model("hardkuma").eval()
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    other = _model("hardkuma", hardkuma_support="-0.1,1.1")
    with torch.no_grad():
        for prm in other.parameters():
            prm.add_(1.0)
    other.load_state_dict(torch.load(path, weights_only=True))
    other.eval()
    p, h = _inputs()
    assert torch.equal(model(premise=p, hypothesis=h)[0], other(premise=p, hypothesis=h)[0])


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="hardkuma-support"):
        _model("hardkuma", hardkuma_support="oops")
