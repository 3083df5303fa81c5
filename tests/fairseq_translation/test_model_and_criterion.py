"""transformer_hardkuma: which attentions are HardKuma, parameter parity, incremental decoding of
the whole model, and the label-smoothed L0 criterion."""
import pytest
import torch

from fairseq import options, tasks
from fairseq.data import Dictionary
from fairseq.modules.multihead_attention import MultiheadAttention

import fairseq_plugins  # noqa: F401  (registers model, archs, criterion)
from fairseq_plugins.translation import HardKumaMultiheadAttention
from hardkuma_attention import collect_attention_stats

WORDS = [f"w{i}" for i in range(20)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dicts")
    for lang in ("de", "en"):
        (d / f"dict.{lang}.txt").write_text("".join(f"{w} {100 - i}\n" for i, w in enumerate(WORDS)))
    return d


def build(data_dir, attention, *extra):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(data_dir), "--task", "translation", "-s", "de", "-t", "en", "--arch", "transformer_hardkuma_tiny",
        "--hardkuma-attention", attention, "--share-all-embeddings", "--dropout", "0", "--cpu", *extra,
    ])
    task = tasks.setup_task(args)
    torch.manual_seed(0)
    return task, task.build_model(args), args


def attention_modules(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, MultiheadAttention)}


@pytest.mark.parametrize("attention,expected", [
    ("none", set()),
    ("cross", {"cross"}),
    ("self", {"encoder_self", "decoder_self"}),
    ("all", {"encoder_self", "decoder_self", "cross"}),
])
def test_attention_choice_selects_modules(data_dir, attention, expected):
    _, model, _ = build(data_dir, attention)
    mods = attention_modules(model)
    assert len(mods) == 3  # encoder self, decoder self, encoder-decoder (1 layer each)
    keys = {m.stats_key for m in mods.values() if isinstance(m, HardKumaMultiheadAttention)}
    assert keys == expected
    if "cross" in expected:
        assert isinstance(model.decoder.layers[0].encoder_attn, HardKumaMultiheadAttention)


def test_same_parameters_as_softmax(data_dir):
    counts = {a: sum(p.numel() for p in build(data_dir, a)[1].parameters()) for a in ("none", "cross", "all")}
    assert counts["none"] == counts["cross"] == counts["all"]


def toy_batch(task, B=3, S=6, T=5):
    d = task.source_dictionary
    g = torch.Generator().manual_seed(0)
    src = torch.randint(d.nspecial, len(d), (B, S), generator=g)
    src[0, :2] = d.pad()  # left-padded source, as fairseq's translation task makes it
    src[:, -1] = d.eos()
    lengths = (src != d.pad()).sum(1)
    tgt = torch.randint(d.nspecial, len(d), (B, T), generator=g)
    tgt[:, -1] = d.eos()
    prev = torch.cat([torch.full((B, 1), d.eos()), tgt[:, :-1]], 1)
    return {"net_input": {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev},
            "target": tgt, "ntokens": int(tgt.numel()), "id": torch.arange(B)}


@torch.no_grad()
def test_incremental_decoding_matches_full_sequence(data_dir):
    task, model, _ = build(data_dir, "all")
    model.eval()
    batch = toy_batch(task)
    net = batch["net_input"]
    full, _ = model(**net)
    enc = model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
    state = {}
    steps = []
    for t in range(net["prev_output_tokens"].size(1)):
        out, extra = model.decoder(net["prev_output_tokens"][:, : t + 1], encoder_out=enc, incremental_state=state)
        steps.append(out)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4)
    assert extra["attn"][0].shape == (3, 1, 6)


def test_criterion_adds_penalty_and_logs(data_dir):
    task, model, args = build(
        data_dir, "all", "--criterion", "label_smoothed_cross_entropy_l0", "--label-smoothing", "0.1",
        "--l0-target", "0.05", "--l0-keys", "cross", "--l0-lambda-init", "1.0",
    )
    criterion = task.build_criterion(args)
    batch = toy_batch(task)
    model.train()
    criterion.train()
    torch.manual_seed(0)
    loss, sample_size, log = criterion(model, batch)
    assert sample_size == batch["ntokens"]
    assert float(loss.detach()) > float(log["loss"])  # the penalty is on top of the task loss
    assert float(log["l0_penalty"]) > 0
    assert {"l0_sum:cross", "l0_cells:cross", "l0_sum:encoder_self"} <= set(log)
    loss.backward()
    assert model.decoder.layers[0].encoder_attn.q_proj.weight.grad.abs().sum() > 0
    criterion.eval()
    model.eval()
    with torch.no_grad():
        loss_eval, _, log_eval = criterion(model, batch)
    assert "l0_penalty" not in log_eval and float(loss_eval) == float(log_eval["loss"])


def test_softmax_model_reports_no_stats(data_dir):
    task, model, _ = build(data_dir, "none")
    with collect_attention_stats() as stats:
        model(**toy_batch(task)["net_input"])
    assert stats.total() is None


@torch.no_grad()
@pytest.mark.parametrize("attention", ["none", "cross"])
def test_cross_attention_recorder_leaves_the_model_unchanged(data_dir, attention):
    """fairseq_plugins.translation.analyze's recorder (recipes/multi30k/evaluate.sh): per-head
    cross-attention of every decoder layer, same model outputs (and same returned attention) as
    without it."""
    from fairseq_plugins.translation import analyze

    task, model, _ = build(data_dir, attention)
    model.eval()
    net = toy_batch(task)["net_input"]
    ref_out, ref_extra = model(**net)
    with analyze.CrossAttentionRecorder(model) as rec:
        out, extra = model(**net)
    assert torch.equal(out, ref_out) and torch.equal(extra["attn"][0], ref_extra["attn"][0])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in rec.modules)  # hooks removed
    (w,), = rec.weights  # one decoder layer, one forward
    B, S = net["src_tokens"].shape
    assert w.shape == (model.decoder.layers[0].encoder_attn.num_heads, B, net["prev_output_tokens"].size(1), S)
    assert torch.allclose(w.mean(0), ref_extra["attn"][0])  # the last layer's head mean, as fairseq returns it
    assert (w[:, 0, :, :2] == 0).all()  # left padding of sentence 0
    if attention == "none":
        assert (w[:, 1:] > 0).all()


def test_multi30k_preset_is_the_controller_the_recipe_passed_flag_by_flag(data_dir):
    """recipes/multi30k/train.sh passed four controller flags; it now passes --l0-preset multi30k.
    Both argument lists build the same controller and the same constraint."""
    common = ("--criterion", "label_smoothed_cross_entropy_l0", "--label-smoothing", "0.1",
              "--l0-target", "0.2", "--l0-keys", "cross")
    before = ("--l0-lagrange-lr", "0.05", "--l0-lagrange-alpha", "0.9", "--l0-lambda-init", "5e-3",
              "--l0-lambda-max", "0.1")
    crits = {}
    for name, flags in (("before", before), ("after", ("--l0-preset", "multi30k"))):
        task, _, args = build(data_dir, "cross", *common, *flags)
        crits[name] = task.build_criterion(args).l0
    assert crits["before"].controller == crits["after"].controller
    a, b = crits["before"].constraint, crits["after"].constraint
    for attr in ("target", "alpha", "lr", "lambda_min", "lambda_max", "equality", "damping"):
        assert getattr(a, attr) == getattr(b, attr), attr
    assert torch.equal(a.lagrange_multiplier, b.lagrange_multiplier)
    assert crits["after"].keys == ("cross",)
