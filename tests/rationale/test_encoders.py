"""The CNN encoder option (``ModelConfig.encoder="cnn"``): masking, shapes, training, save/load."""
import pytest
import torch

from hardkuma_attention.rationale import LabelMap, ModelConfig, ObjectiveConfig, Pipeline, RationaleModel
from hardkuma_attention.rationale import RationaleObjective, load_pipeline
from hardkuma_attention.rationale.embeddings import build_vocab
from hardkuma_attention.rationale.models import CNNEncoder

from synthetic import marker_examples


def test_cnn_encoder_ignores_padding_and_handles_empty_rows():
    torch.manual_seed(0)
    enc = CNNEncoder(6, 4, kernel=3, layers=2)
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


def test_cnn_encoder_gradcheck():
    torch.manual_seed(0)
    enc = CNNEncoder(3, 2, kernel=3, layers=2).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])
    assert torch.autograd.gradcheck(lambda t: enc(t, lengths)[0], (x,))


def test_encoder_config_is_validated():
    with pytest.raises(ValueError, match="encoder"):
        ModelConfig(vocab_size=5, encoder="gru")
    with pytest.raises(ValueError, match="cnn_kernel"):
        ModelConfig(vocab_size=5, encoder="cnn", cnn_kernel=4)


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
