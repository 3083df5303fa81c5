"""attn_implementation="hardkuma" in Hugging Face transformers: tiny random BERT, GPT-2, Llama
(grouped-query), BART and T5 models built from configs (no downloads)."""
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

import hardkuma_attention.integrations.transformers as hk  # noqa: E402  (registers "hardkuma")
import transformers as tf  # noqa: E402
from hardkuma_attention import LagrangianConstraint, collect_attention_stats  # noqa: E402

V = 40  # vocabulary; ids 0-2 are special (pad 0, bos/eos 1/2 where a config needs them)


def make(name, impl="hardkuma", **kw):
    """(model, number of attention calls per forward) for a tiny random model."""
    torch.manual_seed(0)
    special = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if name == "bert":
        cfg = tf.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64, pad_token_id=0, **kw)
        return tf.BertForSequenceClassification._from_config(cfg, attn_implementation=impl), 2
    if name == "gpt2":
        cfg = tf.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, **special, **kw)
        return tf.GPT2LMHeadModel._from_config(cfg, attn_implementation=impl), 2
    if name == "llama":
        cfg = tf.LlamaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                             **special, **kw)
        return tf.LlamaForCausalLM._from_config(cfg, attn_implementation=impl), 2
    if name == "bart":
        cfg = tf.BartConfig(vocab_size=V, d_model=32, encoder_layers=1, decoder_layers=1,
                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                            decoder_ffn_dim=64, max_position_embeddings=64, decoder_start_token_id=2,
                            forced_eos_token_id=None, **special, **kw)
        return tf.BartForConditionalGeneration._from_config(cfg, attn_implementation=impl), 3
    if name == "t5":
        cfg = tf.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                          num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **kw)
        return tf.T5ForConditionalGeneration._from_config(cfg, attn_implementation=impl), 3
    raise ValueError(name)


MODELS = ["bert", "gpt2", "llama", "bart", "t5"]


def inputs(model, B=3, T=7, pad_row=None, left=False):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - 3:] = 0  # right padding in row 1 (left padding for decoder-only: see `left`)
    if left:
        mask[1] = mask[1].flip(0)
    if pad_row is not None:
        mask[pad_row] = 0
    ids = ids.masked_fill(mask == 0, 0)
    kw = {"input_ids": ids, "attention_mask": mask}
    if model.config.is_encoder_decoder:
        kw["decoder_input_ids"] = torch.randint(3, V, (B, 5), generator=g)
    return kw


def loss_of(model, out):
    return out.logits.float().pow(2).mean()


@pytest.mark.parametrize("name", MODELS)
def test_train_forward_backward_and_stats(name):
    model, calls = make(name)
    model.train()
    with collect_attention_stats() as st:
        out = model(**inputs(model))
    assert len(st.items) == calls
    total = st.total()
    assert total.expected_l0.requires_grad and 0 < float(total.nonzero_rate) <= 1
    (loss_of(model, out) + total.expected_l0).backward()
    grads = [p.grad for n, p in model.named_parameters() if any(s in n for s in ("q_proj", "query", "c_attn", ".q."))]
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic_and_train_samples(name):
    model, _ = make(name)
    x = inputs(model)
    model.eval()
    with torch.no_grad():
        a, b = model(**x).logits, model(**x).logits
    assert torch.equal(a, b)
    model.train()
    with torch.no_grad():
        c, d = model(**x).logits, model(**x).logits
    assert not torch.equal(c, d)


def _attentions(out):
    if hasattr(out, "encoder_attentions") and out.encoder_attentions:
        return {"enc": out.encoder_attentions, "dec": out.decoder_attentions, "cross": out.cross_attentions}
    return {"self": out.attentions}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("train", [False, True])
def test_padding_gets_exactly_zero_weight_and_no_nan(name, train):
    """Row 1 is padded (left-padded for decoder-only models), row 2 fully padded."""
    model, calls = make(name)
    model.train(train)
    decoder_only = name in ("gpt2", "llama")
    x = inputs(model, pad_row=2, left=decoder_only)
    valid = x["attention_mask"].bool()
    out = model(**x, output_attentions=True)
    assert torch.isfinite(out.logits).all()
    loss_of(model, out).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    maps = _attentions(out)
    assert sum(len(v) for v in maps.values()) == calls
    for kind, layers in maps.items():
        for w in layers:
            assert torch.isfinite(w).all()
            if kind == "dec":  # decoder self-attention: causal only (no decoder padding given)
                assert (w.triu(1) == 0).all()
                continue
            keys_valid = valid[:, None, None, :]
            assert (w.masked_select(~keys_valid.expand_as(w)) == 0).all()
            assert (w[2] == 0).all()  # fully padded sequence: every row of its map is zero
            if kind == "self" and decoder_only:
                assert (w.triu(1) == 0).all()
                T = w.shape[-1]
                n_pad = int((~valid[1]).sum())
                assert (w[1, :, :n_pad] == 0).all() and n_pad > 0  # left pad queries see only pad keys
                assert w[0].sum(-1).gt(0).float().mean() > 0 and T == 7
    if not decoder_only:
        assert any((w[0] != 0).any() for layers in maps.values() for w in layers)


@pytest.mark.parametrize("name", ["gpt2", "llama", "bart", "t5"])
def test_generate_with_cache_equals_without_cache(name):
    """Greedy decoding in eval mode, a padded batch (left padding for decoder-only models, one
    prompt with a single real token)."""
    model, _ = make(name)
    model.eval()
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(3, V, (3, 6), generator=g)
    mask = torch.ones_like(prompt)
    if name in ("gpt2", "llama"):
        mask[1, :2] = 0
        mask[2, :5] = 0
    else:
        mask[1, 4:] = 0
    prompt = prompt.masked_fill(mask == 0, 0)
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, attention_mask=mask)
    with torch.no_grad():
        with_cache = model.generate(prompt, use_cache=True, **kw)
        without = model.generate(prompt, use_cache=False, **kw)
    assert with_cache.shape[-1] >= 7 and torch.equal(with_cache, without)


def test_pretrained_parameterization_starts_from_the_model_scores():
    """score_a is the model's own q.k * scaling: a model whose keys all score alike opens all
    gates alike; the per-head offset is a trained, saved parameter."""
    model, calls = make("bert")
    hk.configure(model, parameterization="pretrained")  # offset 0: b = softplus(0), median gates
    offsets = [n for n, _ in model.named_parameters() if n.endswith(hk.OFFSET_PARAM)]
    assert len(offsets) == calls
    model.train()
    with collect_attention_stats() as st:
        out = model(**inputs(model))
    (loss_of(model, out) + st.total().expected_l0).backward()
    for n, p in model.named_parameters():
        if n.endswith(hk.OFFSET_PARAM):
            assert p.shape == (4,) and p.grad is not None and p.grad.abs().sum() > 0
    # the a-score ranks keys as the softmax model does: same argmax per row in eval
    x = inputs(model)
    sdpa, _ = make("bert", impl="eager")
    sdpa.eval()
    model.eval()
    with torch.no_grad():
        soft = sdpa(**x, output_attentions=True).attentions[0]
        hard = model(**x, output_attentions=True).attentions[0]
    rows = hard.sum(-1) > 0
    assert rows.any()
    assert torch.equal(soft.argmax(-1)[rows], hard.argmax(-1)[rows])
    # every pair of keys is ordered alike (gates are monotone in score_a at fixed b)
    ds = soft.unsqueeze(-1) - soft.unsqueeze(-2)
    dh = hard.unsqueeze(-1) - hard.unsqueeze(-2)
    assert (ds * dh >= 0).all()


def test_options_float_masks_and_errors():
    model, calls = make("bert", impl="sdpa")  # configure() switches an existing model
    with pytest.raises(ValueError, match="normalize"):
        hk.configure(model, normalize="max")
    with pytest.raises(ValueError, match="unknown"):
        hk.configure(model, temperature=2.0)
    hk.configure(model, normalize="sum")
    assert model.config.hardkuma["normalize"] == "sum" and model.config._attn_implementation == "hardkuma"
    model.eval()
    x = inputs(model)
    with torch.no_grad(), collect_attention_stats() as st:
        w = model(**x, output_attentions=True).attentions[0]
    assert len(st.items) == calls
    sums = w.sum(-1)
    assert torch.allclose(sums[sums > 0], torch.ones(()).expand_as(sums[sums > 0]), atol=1e-5)
    # a float additive mask in place of the bool one: same result
    valid = x["attention_mask"].bool()[:, None, None, :]
    additive = torch.zeros(valid.shape).masked_fill(~valid, torch.finfo(torch.float32).min)
    q, k, v = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 8)
    module = model.bert.encoder.layer[0].attention.self
    a, wa = hk.hardkuma_attention_forward(module, q, k, v, valid, output_attentions=True)
    b, wb = hk.hardkuma_attention_forward(module, q, k, v, additive, output_attentions=True)
    assert torch.equal(a, b) and torch.equal(wa, wb) and a.shape == (3, 4, 2, 8)


def test_mask_to_valid_bias_dialects():
    """Bool True = allowed; a float mask is additive (``<= -1e4`` disallows, other values shift
    ``score_a``; no bias when they are all 0); ``position_bias`` adds; integer masks are refused."""
    keep = torch.tensor([[True, False, True]])
    valid, bias = hk.mask_to_valid_bias(keep, None, torch.float32)
    assert valid is keep and bias is None
    additive = torch.tensor([[0.0, -1e9, 0.0]])
    valid, bias = hk.mask_to_valid_bias(additive, None, torch.float32)
    assert torch.equal(valid, keep) and bias is None
    shifted = torch.tensor([[0.5, float("-inf"), -2.0]], dtype=torch.float64)
    valid, bias = hk.mask_to_valid_bias(shifted, torch.ones(1, 3), torch.float32)
    assert torch.equal(valid, keep) and bias.dtype == torch.float32
    assert torch.equal(bias, torch.tensor([[1.5, 1.0, -1.0]]))
    with pytest.raises(TypeError, match="attention mask must be bool or floating point"):
        hk.mask_to_valid_bias(torch.ones(1, 3, dtype=torch.long), None, torch.float32)


def test_options_gate_fields_validated_by_gate_config():
    """The gate options (normalize, support, ab_clamp) are checked as a GateConfig, defaults from
    the "attention" preset."""
    from hardkuma_attention.config import DEFAULT_AB_RANGE, GateConfig

    gate = GateConfig.preset("attention")
    assert hk.DEFAULT_OPTIONS["ab_clamp"] == list(DEFAULT_AB_RANGE)
    assert hk.DEFAULT_OPTIONS["support"] == list(gate.support) and hk.DEFAULT_OPTIONS["normalize"] == gate.normalize
    assert hk.get_options(None) == hk.DEFAULT_OPTIONS
    for bad, match in ((dict(support=[0.0, 1.1]), "support"), (dict(ab_clamp=[5.0, 1.0]), "ab_range"),
                       (dict(parameterization="separate"), "parameterization")):
        with pytest.raises(ValueError, match=match):
            hk.configure(make("bert")[0], **bad)


def test_save_load_round_trip(tmp_path):
    model, _ = make("bert")
    hk.configure(model, normalize="sum", support=(-0.2, 1.2))
    model.eval()
    x = inputs(model)
    with torch.no_grad():
        ref = model(**x).logits
    model.save_pretrained(tmp_path / "split")
    loaded = hk.from_pretrained(tf.BertForSequenceClassification, str(tmp_path / "split"))
    assert loaded.config._attn_implementation == "hardkuma"
    assert loaded.config.hardkuma["normalize"] == "sum" and loaded.config.hardkuma["support"] == [-0.2, 1.2]
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(**x).logits, ref)

    model, _ = make("gpt2")
    hk.configure(model, parameterization="pretrained")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(hk.OFFSET_PARAM):
                p.copy_(torch.linspace(-1, 1, 4))
    model.eval()
    y = inputs(model)
    with torch.no_grad():
        ref = model(**y).logits
    model.save_pretrained(tmp_path / "pre")
    loaded = hk.from_pretrained(tf.GPT2LMHeadModel, str(tmp_path / "pre"))
    assert loaded.config.hardkuma["parameterization"] == "pretrained"
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(**y).logits, ref)


class _Copy(torch.utils.data.Dataset):
    """Synthetic task: the label is whether token 3 occurs in the sequence (BERT-style, CLS at 0)."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, V, (n, 10), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        pos = torch.randint(1, 10, (n,), generator=g)
        self.ids[self.labels == 1, pos[self.labels == 1]] = 3
        self.ids[:, 0] = 1

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(10, dtype=torch.long), "labels": self.labels[i]}


def _trainer(model, out_dir, steps, constraint, **args):
    targs = tf.TrainingArguments(
        output_dir=str(out_dir), max_steps=steps, per_device_train_batch_size=32, learning_rate=3e-3,
        logging_steps=10, report_to=[], use_cpu=True, disable_tqdm=True, seed=0, **args)
    return hk.HardKumaTrainer(model=model, args=targs, train_dataset=_Copy(512, 0), constraint=constraint)


def test_trainer_constraint_brings_nonzero_rate_under_target(tmp_path):
    """The paper's inequality constraint (E[L0] <= 0.3) with a slowly growing multiplier: the task
    is learnt first, then the non-zero rate falls from ~0.87 to the target and below, the
    multiplier relaxes again, and the gates the task needs stay open."""
    target = 0.3
    model, _ = make("bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    constraint = LagrangianConstraint(target, alpha=0.9, lr=0.1, lambda_init=1e-4)
    trainer = _trainer(model, tmp_path, 300, constraint, save_strategy="no")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "nz" in h]
    assert len(logs) == 30 and {"l0", "nz", "lambda", "loss"} <= set(logs[-1])
    assert logs[0]["nz"] > target + 0.4  # it started far above the target
    assert max(h["lambda"] for h in logs) > 10 * logs[-1]["lambda"]  # pushed, then relaxed
    late = [h["nz"] for h in logs[-5:]]
    assert all(0.01 < nz <= target for nz in late), late
    assert sum(h["loss"] for h in logs[-5:]) / 5 < 0.1  # the task is solved with the sparse gates
    assert int(constraint.num_updates) == 300


def test_trainer_checkpoint_saves_and_restores_the_multiplier(tmp_path):
    model, _ = make("bert")
    c = LagrangianConstraint(0.2, alpha=0.5, lr=0.5, lambda_init=0.1)
    trainer = _trainer(model, tmp_path, 4, c, save_strategy="steps", save_steps=2)
    trainer.train()
    ck = tmp_path / "checkpoint-2"
    saved = torch.load(ck / hk.CONSTRAINT_FILE)
    assert int(saved["num_updates"]) == 2 and float(saved["lagrange_multiplier"]) != 0.1
    model2, _ = make("bert")
    c2 = LagrangianConstraint(0.2, alpha=0.5, lr=0.5, lambda_init=0.1)
    resumed = _trainer(model2, tmp_path, 4, c2, save_strategy="no")
    resumed.train(resume_from_checkpoint=str(ck))
    assert int(c2.num_updates) == 4
    assert torch.equal(c2.lagrange_multiplier, c.lagrange_multiplier)
    assert torch.equal(c2.moving_average, c.moving_average)


def test_readme_section_examples_run():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Hugging Face and convert", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    hf, plain = {}, {}
    exec(compile(blocks[0], "README.md", "exec"), hf)
    exec(compile(blocks[1], "README.md", "exec"), plain)
    assert hf["model"].config._attn_implementation == "hardkuma"
    assert hf["model"].config.hardkuma["parameterization"] == "split"
    from hardkuma_attention import HardKumaAttention

    # nn.Transformer's defaults: 6 encoder layers (self) + 6 decoder layers (self + cross)
    assert sum(isinstance(m, HardKumaAttention) for m in plain["model"].modules()) == 18
