"""Coherence: the transition constraint measured per selected token turns a scattered selection into
the contiguous evidence span without collapsing it; the paper's per-length rate pushes every isolated
open gate shut, and at the closed corner only the log surrogate still has a gradient."""
import pytest
import torch

from hardkuma_attention.config import ControllerConfig
from hardkuma_attention.distributions import HardKumaraswamy
from hardkuma_attention.functional import expected_transitions
from hardkuma_attention.rationale import LabelMap, ModelConfig, ObjectiveConfig, Pipeline, RationaleModel
from hardkuma_attention.rationale import RationaleObjective, TrainConfig, load_pipeline, train
from hardkuma_attention.rationale.embeddings import build_vocab
from hardkuma_attention.rationale.objectives import decoded_lasso, lasso_measured, selection_surrogate

from synthetic import span_examples

TARGET = 0.2  # 8 of 40 tokens: the 5-token phrase plus 3 more


def _p0_sequence(open_at, n=9, p_open=0.9, p_closed=1e-3):
    """P0 (B=1, n) for gates open (``1 - P0 = p_open``) at ``open_at`` and nearly closed elsewhere."""
    p = torch.full((1, n), p_closed, dtype=torch.float64)
    p[0, list(open_at)] = p_open
    return (1 - p).requires_grad_(True)


def test_rate_measure_is_the_papers_expected_transition_rate():
    p0 = torch.rand(3, 7, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    assert torch.equal(lasso_measured(p0, mask, "rate"), expected_transitions(p0, mask, dim=-1, normalize=True))


def test_per_selected_matches_an_independent_formula_and_ignores_padding():
    torch.manual_seed(0)
    p0 = torch.rand(2, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    p = 1 - p0
    trans = sum(float(p[b, t] * (1 - p[b, t + 1]) + (1 - p[b, t]) * p[b, t + 1])
                for b, n in ((0, 4), (1, 6)) for t in range(n - 1))
    selected = float(p[0, :4].sum() + p[1].sum())
    assert float(lasso_measured(p0, mask, "per_selected")) == pytest.approx(trans / selected, rel=1e-12)
    padded = p0.clone()
    padded[0, 4:] = 0.123  # values under the mask do not matter
    assert torch.allclose(lasso_measured(padded, mask, "per_selected"), lasso_measured(p0, mask, "per_selected"))


def test_rate_pushes_an_isolated_gate_shut_per_selected_grows_its_run():
    # gradient with respect to p = 1 - P0 (the penalty is minimised: a positive d/dp closes the gate)
    grads = {}
    for kind in ("rate", "per_selected"):
        p0 = _p0_sequence([4])
        lasso_measured(p0, torch.ones_like(p0, dtype=torch.bool), kind).backward()
        grads[kind] = -p0.grad[0]  # d/dp = -d/dP0
    assert grads["rate"][4] > 0.2  # the paper's rate: the isolated open gate is pushed shut
    assert abs(grads["per_selected"][4]) < 0.05 * grads["rate"][4]  # scale-free: no push to close it
    assert grads["per_selected"][3] < 0 and grads["per_selected"][5] < 0  # its neighbours are pushed open
    # closing everything is no optimum of the per-selected measure (an isolated gate: 2 per token)
    full_run = _p0_sequence(range(2, 7))
    ones = torch.ones_like(full_run, dtype=torch.bool)
    assert lasso_measured(full_run, ones, "per_selected") < 0.5 * lasso_measured(_p0_sequence([4]), ones, "per_selected")


def test_decoded_lasso_counts_switches_per_selected_token():
    z = torch.tensor([[0, 1, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    mask = torch.ones_like(z, dtype=torch.bool)
    assert float(decoded_lasso(z, mask, "per_selected")) == pytest.approx(3 / 3)
    assert float(decoded_lasso(z, mask, "rate")) == pytest.approx((3 / 6 + 0) / 2)
    assert float(decoded_lasso(torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool), "per_selected")) == 0.0


def test_log_open_gradient_survives_at_the_closed_corner():
    # a = 0.1, b = 10 is the closed corner of the default ab range: P0 ~ 1 - 3e-7
    b = torch.full((1, 5), 10.0, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 5, dtype=torch.bool)
    grads = {}
    for kind in ("l0", "open", "log_open"):
        b.grad = None
        dist = HardKumaraswamy(torch.full_like(b, 0.1), b)
        selection_surrogate(dist, mask, kind).backward()
        grads[kind] = b.grad.abs().max().item()
    assert float(HardKumaraswamy(torch.full_like(b, 0.1), b.detach()).prob_zero().min()) > 1 - 1e-6
    assert grads["l0"] < 1e-6 and grads["open"] < 1e-6
    assert grads["log_open"] > 0.1


def test_objective_options_are_validated_and_old_behaviour_reachable():
    with pytest.raises(ValueError, match="lasso_measure"):
        ObjectiveConfig(lasso_measure="spans")
    with pytest.raises(ValueError, match="lasso_priority"):
        ObjectiveConfig(lasso_priority=-1.0)
    with pytest.raises(ValueError, match="selection-measure decoded"):
        ObjectiveConfig(controller=ControllerConfig.preset("rationale", observe="expected"), selection_gradient="log_open")
    assert ObjectiveConfig(lasso_measure="rate").lasso_measure == "rate"


def test_lasso_priority_switches_the_lasso_off_while_selection_is_short():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=20, embed_dim=8, hidden_size=8, num_outputs=2, dropout=0.0)
    model = RationaleModel(cfg).train()
    tokens = torch.randint(1, 20, (4, 12))
    out = model(tokens, tokens != 0)
    objective = RationaleObjective(ObjectiveConfig(selection=0.5, lasso=0.1, lasso_priority=0.02), "hardkuma").train()
    objective.selection_constraint.moving_average.fill_(-0.3)  # selection far below its target
    _, stats = objective(out, torch.zeros(4, dtype=torch.long))
    assert stats["lasso_active"] == 0.0
    objective.selection_constraint.moving_average.fill_(0.0)
    _, stats = objective(model(tokens, tokens != 0), torch.zeros(4, dtype=torch.long))
    assert stats["lasso_active"] == 1.0


def _train_span(tmp_path, **objective):
    torch.set_num_threads(1)
    train_ex, dev_ex = span_examples(1000, seed=0), span_examples(200, seed=1)
    vocab = build_vocab(ex.tokens for ex in train_ex)
    labels = LabelMap.from_examples(train_ex, "classification")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=16, hidden_size=16, num_outputs=2, gate="hardkuma",
                      dropout=0.0, freeze_embeddings=False, pooling="max")
    # selection_anneal: the target falls from 1 to 0.2, so the extra gates are closed from above
    # instead of having to be opened from the closed corner.
    ctrl = ControllerConfig.preset("rationale", lr=0.02, warmup=40)
    obj = RationaleObjective(ObjectiveConfig(selection=TARGET, controller=ctrl, selection_anneal=150, **objective),
                             "hardkuma")
    pipe = Pipeline(RationaleModel(cfg), obj, vocab, labels)
    train(pipe, train_ex, dev_ex, TrainConfig(epochs=6, batch_size=25, lr=3e-3, eval_every=20, progress=False,
                                               selection_tolerance=0.03), tmp_path)
    metrics, records = load_pipeline(tmp_path / "model.pt").evaluate(dev_ex)
    ious = []
    for r, ex in zip(records, dev_ex):
        pred = {i for i, g in enumerate(r["gates"]) if g != 0}
        gold = {i for i, g in enumerate(ex.rationale) if g}
        ious.append(len(pred & gold) / len(pred | gold))  # token-set IOU with the phrase
    metrics["iou_at_least_half"] = sum(i >= 0.5 for i in ious) / len(ious)
    return metrics


def test_coherence_constraint_selects_the_span_without_collapse(tmp_path):
    plain = _train_span(tmp_path / "plain")
    coherent = _train_span(tmp_path / "coherent", lasso=0.25, lasso_measure="per_selected")
    keys = ("accuracy", "selected", "transitions", "token_f1", "iou_f1", "iou_at_least_half")
    for name, m in (("plain", plain), ("coherent", coherent)):  # shown with pytest -s (README figures)
        print(name, " ".join(f"{k}={m[k]:.3f}" for k in keys))
    for m in (plain, coherent):
        assert m["accuracy"] >= 0.95, m
        assert abs(m["selected"] - TARGET) <= 0.03, m  # never collapses to nothing
    # one run of ~8 tokens is 2 transitions per 40 tokens = 0.05; scattered selections have more
    assert coherent["transitions"] <= 0.07, coherent
    assert plain["transitions"] >= coherent["transitions"] + 0.03, (plain, coherent)
    assert coherent["iou_at_least_half"] >= 0.75, coherent
    assert coherent["iou_f1"] > plain["iou_f1"] + 0.1, (plain, coherent)


def test_checkpoint_without_lasso_measure_loads_with_the_papers_rate(tmp_path):
    examples = span_examples(4, seed=0)
    vocab = build_vocab(ex.tokens for ex in examples)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=4, hidden_size=4, num_outputs=2)
    pipe = Pipeline(RationaleModel(cfg), RationaleObjective(ObjectiveConfig(selection=0.2, lasso=0.1), "hardkuma"),
                    vocab, LabelMap.from_examples(examples, "classification"))
    state = pipe.state()
    assert state["objective_config"]["lasso_measure"] == "per_selected"
    del state["objective_config"]["lasso_measure"]  # as written before the option existed
    torch.save(state, tmp_path / "old.pt")
    assert load_pipeline(tmp_path / "old.pt").objective.config.lasso_measure == "rate"
    pipe.save(tmp_path / "new.pt")
    assert load_pipeline(tmp_path / "new.pt").objective.config.lasso_measure == "per_selected"
