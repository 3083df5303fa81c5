"""The CNN encoder option (``ModelConfig.encoder="cnn"``): masking, shapes, receptive field (dilated
selector), training, save/load."""
import dataclasses
import itertools

import pytest
import torch

from hardkuma_attention.rationale import LabelMap, ModelConfig, ObjectiveConfig, Pipeline, RationaleModel
from hardkuma_attention.rationale import RationaleObjective, load_pipeline
from hardkuma_attention.rationale.embeddings import build_vocab
from hardkuma_attention.rationale.models import CNNEncoder

from synthetic import marker_examples


@pytest.mark.parametrize("dilation", [1, 3])
def test_cnn_encoder_ignores_padding_and_handles_empty_rows(dilation):
    torch.manual_seed(0)
    enc = CNNEncoder(6, 4, kernel=3, layers=2, dilation=dilation)
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 0])
    out, final = enc(x, lengths)
    assert out.shape == (3, 7, 8) and final.shape == (3, 8)
    garbage = x.clone()
    garbage[1, 4:] = 100.0  # padding content must not leak into valid positions
    out2, final2 = enc(garbage, lengths)
    assert torch.allclose(out[1, :4], out2[1, :4]) and torch.allclose(final[1], final2[1])
    assert torch.equal(out[1, 4:], torch.zeros_like(out[1, 4:]))
    assert torch.equal(final[2], torch.zeros(8)) and torch.equal(out[2], torch.zeros_like(out[2]))
    # one row alone gives the same as in the batch (no cross-row mixing)
    alone, _ = enc(x[1:2, :4], lengths[1:2])
    assert torch.allclose(alone[0], out[1, :4], atol=1e-6)
    # length 1: the max over time is the single output
    o1, f1 = enc(x[:1, :1], torch.tensor([1]))
    assert torch.allclose(f1, o1[:, 0])


@pytest.mark.parametrize("kernel, layers, dilation", [(5, 2, 1), (5, 2, 4), (3, 3, 2), (3, 2, 5)])
def test_cnn_encoder_receptive_field_is_the_dilated_taps(kernel, layers, dilation):
    """Output t depends on exactly the inputs t + sum_l j_l d^l, |j_l| <= kernel // 2 (positive weights,
    biases and inputs keep every relu open, so each tap shows up in the gradient)."""
    torch.manual_seed(0)
    enc = CNNEncoder(3, 2, kernel=kernel, layers=layers, dilation=dilation).double()
    with torch.no_grad():
        for conv in enc.convs:
            conv.weight.abs_().add_(0.1), conv.bias.abs_().add_(0.1)
    length, t = 81, 40
    x = (torch.rand(1, length, 3, dtype=torch.float64) + 0.1).requires_grad_()
    enc(x, torch.tensor([length]))[0][0, t].sum().backward()
    seen = set((x.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist())
    k = kernel // 2
    taps = {t + sum(j * dilation ** l for l, j in enumerate(js))
            for js in itertools.product(range(-k, k + 1), repeat=layers)}
    assert seen == taps
    if dilation <= kernel:  # contiguous: 1 + (kernel - 1)(1 + d + ... + d^(L-1)) tokens
        assert len(seen) == 1 + (kernel - 1) * sum(dilation ** l for l in range(layers))


def test_cnn_encoder_gradcheck():
    torch.manual_seed(0)
    enc = CNNEncoder(3, 2, kernel=3, layers=2, dilation=2).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])
    assert torch.autograd.gradcheck(lambda t: enc(t, lengths)[0], (x,))


def test_encoder_config_is_validated():
    with pytest.raises(ValueError, match="encoder"):
        ModelConfig(vocab_size=5, encoder="gru")
    with pytest.raises(ValueError, match="cnn_kernel"):
        ModelConfig(vocab_size=5, encoder="cnn", cnn_kernel=4)
    with pytest.raises(ValueError, match="selector_dilation"):
        ModelConfig(vocab_size=5, encoder="cnn", selector_dilation=0)
    with pytest.raises(ValueError, match="selector_dilation"):
        ModelConfig(vocab_size=5, encoder="lstm", selector_dilation=2)


@pytest.mark.parametrize("gate", ["hardkuma", "bernoulli"])
def test_selector_dilation_widens_the_selector_only(tmp_path, gate):
    cfg = ModelConfig(vocab_size=7, embed_dim=4, hidden_size=3, num_outputs=2, gate=gate, encoder="cnn",
                      cnn_kernel=5, cnn_layers=2, selector_dilation=4)
    model = RationaleModel(cfg)
    assert [c.dilation for c in model.selector.encoder.convs] == [(1,), (4,)]
    assert [c.padding for c in model.selector.encoder.convs] == [(2,), (8,)]
    assert [c.dilation for c in model.classifier.encoder.convs] == [(1,), (1,)]
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "selector_dilation"}
    assert ModelConfig.from_dict(old).selector_dilation == 1  # configs saved before the field
    assert ModelConfig.from_dict(dataclasses.asdict(cfg)) == cfg


@pytest.mark.parametrize("gate", ["hardkuma", "bernoulli", "none"])
def test_cnn_model_trains_and_round_trips(tmp_path, gate):
    torch.manual_seed(0)
    examples = marker_examples(40, seed=0)
    vocab = build_vocab(ex.tokens for ex in examples)
    labels = LabelMap.from_examples(examples, "classification")
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=8, hidden_size=8, num_outputs=2, gate=gate, dropout=0.0,
                      encoder="cnn", pooling="max")
    model = RationaleModel(cfg)
    assert all(type(m.encoder).__name__ == "CNNEncoder" for m in (model.classifier, model.selector) if m is not None)
    objective = RationaleObjective(ObjectiveConfig(selection=0.3 if gate == "hardkuma" else None), gate)
    pipe = Pipeline(model, objective, vocab, labels)
    batch = next(pipe.batches(examples, 8))
    loss, _ = objective(model.train()(batch.tokens, batch.mask), batch.targets)
    loss.backward()
    assert all(p.grad is not None for p in model.classifier.encoder.parameters())
    pipe.save(tmp_path / "m.pt")
    loaded = load_pipeline(tmp_path / "m.pt")
    assert loaded.model.config.encoder == "cnn"
    model.eval(), loaded.model.eval()
    with torch.no_grad():
        a, b = model(batch.tokens, batch.mask), loaded.model(batch.tokens, batch.mask)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.z, b.z)
