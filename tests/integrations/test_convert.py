"""hardkuma_attention.convert (any torch model) and the fairseq softmax -> transformer_hardkuma
checkpoint conversion."""
import pytest
import torch
from torch import nn

import hardkuma_attention
from hardkuma_attention import HardKumaAttention, collect_attention_stats, convert


def tiny_transformer(**kw):
    torch.manual_seed(0)
    return nn.Transformer(d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                          dim_feedforward=32, dropout=0.0, batch_first=True, **kw)


def test_convert_nn_transformer_moves_every_attention_and_keeps_weights():
    model = tiny_transformer()
    before = {n: m for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    assert len(before) == 4  # 2 encoder self, decoder self, decoder cross
    q_weights = {n: m.in_proj_weight.detach().clone() for n, m in before.items()}
    out = convert(model, normalize="none")
    assert out is model
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    after = {n: m for n, m in model.named_modules() if isinstance(m, HardKumaAttention)}
    assert set(after) == set(before)
    for n, m in after.items():
        q, k, v = q_weights[n].chunk(3, 0)
        assert torch.equal(m.q_proj.weight, q) and torch.equal(m.k_proj.weight, k)
        assert torch.equal(m.v_proj.weight, v)
        assert m.normalize == "none" and m.batch_first
    src, tgt = torch.randn(3, 5, 16), torch.randn(3, 4, 16)
    mask = nn.Transformer.generate_square_subsequent_mask(4)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True
    model.eval()
    y = model(src, tgt, tgt_mask=mask, src_key_padding_mask=pad, memory_key_padding_mask=pad)
    assert y.shape == (3, 4, 16) and torch.isfinite(y).all()
    assert torch.equal(y, model(src, tgt, tgt_mask=mask, src_key_padding_mask=pad, memory_key_padding_mask=pad))


def test_converted_model_trains_and_reports_stats():
    model = convert(tiny_transformer())
    head = nn.Linear(16, 1)
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randn(8, 5, 16, generator=g), torch.randn(8, 4, 16, generator=g)
    y = src[:, :4, :1]  # copy task: predict the first source feature at each target step
    model.train()
    losses = []
    for _ in range(40):
        with collect_attention_stats() as st:
            loss = ((head(model(src, tgt)) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        opt.step()
        losses.append(loss.item())
    assert len(st.items) == 4 and 0 < float(st.total().expected_l0) <= 1
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_convert_keeps_dtype_device_training_flag_and_sharing():
    enc_layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).double()
    model = nn.Sequential(enc_layer, nn.Linear(8, 8).double())
    model.eval()
    shared = nn.MultiheadAttention(8, 2)
    holder = nn.ModuleDict({"a": shared, "b": shared, "net": model})
    convert(holder, parameterization="separate")
    assert holder["a"] is holder["b"] and isinstance(holder["a"], HardKumaAttention)
    att = enc_layer.self_attn
    assert isinstance(att, HardKumaAttention) and att.q_proj.weight.dtype == torch.float64
    assert not att.training and att.parameterization == "separate"
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    assert model(x).shape == (2, 3, 8)


@pytest.mark.parametrize("bad_args,match", [
    ((8, 2, 0.0, True, True), "add_bias_kv"),
    ((8, 2, 0.0, True, False, True), "add_zero_attn"),
    ((9, 3), "odd"),  # head dim 3
])
def test_convert_refuses_what_it_cannot_convert(bad_args, match):
    good, bad = nn.MultiheadAttention(8, 2), nn.MultiheadAttention(*bad_args)
    model = nn.ModuleDict({"good": good, "bad": bad})
    with pytest.raises(ValueError, match=match):
        convert(model)
    assert model["good"] is good and model["bad"] is bad  # nothing replaced


def test_convert_refuses_models_without_attention():
    with pytest.raises(ValueError, match="no nn.MultiheadAttention"):
        convert(nn.Linear(2, 2))


def test_convert_is_exported():
    assert hardkuma_attention.convert is convert


# ----------------------------------------------------------------------------- fairseq route
WORDS = [f"w{i}" for i in range(20)]


@pytest.fixture(scope="module")
def fairseq_dicts(tmp_path_factory):
    pytest.importorskip("fairseq")
    d = tmp_path_factory.mktemp("dicts")
    for lang in ("de", "en"):
        (d / f"dict.{lang}.txt").write_text("".join(f"{w} {100 - i}\n" for i, w in enumerate(WORDS)))
    return d


def fairseq_setup(data_dir, arch, *extra):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_plugins  # noqa: F401

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(data_dir), "--task", "translation", "-s", "de", "-t", "en", "--arch", arch,
        "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
        "--decoder-ffn-embed-dim", "32", "--encoder-layers", "1", "--decoder-layers", "1",
        "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--dropout", "0",
        "--share-all-embeddings", "--cpu", "--optimizer", "adam", "--lr", "0.01", *extra,
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return cfg, task, model, criterion


def toy_sample(task, B=3, S=6, T=5):
    d = task.source_dictionary
    g = torch.Generator().manual_seed(0)
    src = torch.randint(d.nspecial, len(d), (B, S), generator=g)
    src[:, -1] = d.eos()
    tgt = torch.randint(d.nspecial, len(d), (B, T), generator=g)
    tgt[:, -1] = d.eos()
    prev = torch.cat([torch.full((B, 1), d.eos()), tgt[:, :-1]], 1)
    return {"net_input": {"src_tokens": src, "src_lengths": torch.full((B,), S), "prev_output_tokens": prev},
            "target": tgt, "ntokens": int(tgt.numel()), "nsentences": B, "id": torch.arange(B)}


def save_trained(cfg, task, model, crit, path):
    """One update, then a checkpoint as fairseq-train writes it (optimizer state included)."""
    from fairseq.trainer import Trainer

    trainer = Trainer(cfg, task, model, crit)
    trainer.train_step([toy_sample(task)])
    trainer.consolidate_optimizer()
    trainer.save_checkpoint(path, {})
    return path


def test_fairseq_softmax_checkpoint_to_hardkuma_and_fine_tune(fairseq_dicts, tmp_path):
    from fairseq import checkpoint_utils
    from fairseq.trainer import Trainer

    from fairseq_plugins.translation import HardKumaMultiheadAttention
    from fairseq_plugins.translation.from_softmax import main
    from fairseq_plugins.translation.model import HardKumaTransformerModel

    cfg, task, model, crit = fairseq_setup(fairseq_dicts, "transformer")
    src_ckpt = save_trained(cfg, task, model, crit, str(tmp_path / "softmax.pt"))
    dst = tmp_path / "hk.pt"
    assert main([src_ckpt, str(dst), "--hardkuma-attention", "all", "--hardkuma-normalize", "sum"]) == 0
    assert not list(tmp_path.glob("*.tmp*"))

    models, saved_cfg, _ = checkpoint_utils.load_model_ensemble_and_task([str(dst)], task=task)
    hk = models[0]
    assert isinstance(hk, HardKumaTransformerModel)
    assert saved_cfg.model.hardkuma_normalize == "sum" and saved_cfg.model.arch == "transformer_hardkuma"
    attn = [m for m in hk.modules() if isinstance(m, HardKumaMultiheadAttention)]
    assert len(attn) == 3 and {m.normalize for m in attn} == {"sum"}
    soft = model.state_dict()
    for k, v in hk.state_dict().items():
        assert torch.equal(v, soft[k]), k

    # fine-tuning start, as fairseq-train --restore-file hk.pt --reset-optimizer does
    cfg2, task2, model2, crit2 = fairseq_setup(
        fairseq_dicts, "transformer_hardkuma", "--hardkuma-attention", "all", "--hardkuma-normalize", "sum")
    trainer2 = Trainer(cfg2, task2, model2, crit2)
    trainer2.load_checkpoint(str(dst), reset_optimizer=True, reset_lr_scheduler=True)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, soft[k]), k
    sample = toy_sample(task2)
    with collect_attention_stats() as st:
        trainer2.train_step([sample])
    assert trainer2.get_num_updates() == 1 and len(st.items) == 3
    assert any(not torch.equal(v, soft[k]) for k, v in model2.state_dict().items())


def test_fairseq_conversion_refuses_bad_input(fairseq_dicts, tmp_path, capsys):
    from fairseq_plugins.translation.from_softmax import main

    assert main([str(tmp_path / "missing.pt"), str(tmp_path / "out.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    cfg, task, model, crit = fairseq_setup(fairseq_dicts, "transformer_hardkuma", "--hardkuma-attention", "all")
    src = save_trained(cfg, task, model, crit, str(tmp_path / "hk.pt"))
    assert main([src, str(tmp_path / "out.pt")]) == 2
    assert "already a transformer_hardkuma" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()
    assert main([src, src]) == 2 and "exists" in capsys.readouterr().err
    assert main([src, str(tmp_path / "o2.pt"), "--hardkuma-support-left", "0.5"]) == 2


def test_core_import_does_not_import_transformers():
    import subprocess
    import sys

    code = ("import sys, hardkuma_attention\n"
            "from hardkuma_attention import convert\n"
            "import hardkuma_attention.integrations\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('transformers', 'fairseq')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
