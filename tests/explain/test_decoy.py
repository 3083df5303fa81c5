"""Decoy digits: patch placement, class-dependent shade at train time, random at test time."""
import pytest
import torch

from hardkuma_attention.explain.decoy import MAX_VALUE, add_decoy


def test_decoy_train_patch_encodes_label():
    g = torch.Generator().manual_seed(0)
    images = torch.full((40, 8, 8), 3.0)
    labels = torch.arange(40) % 10
    d = add_decoy(images, labels, train=True, patch=2, generator=g)
    assert d.annotation.sum(1).tolist() == [4] * 40  # one 2x2 patch each
    x = d.x.view(40, 8, 8)
    for i in range(40):
        patch_vals = d.x[i][d.annotation[i]]
        assert torch.allclose(patch_vals, torch.full((4,), (MAX_VALUE - 1.6 * labels[i].item()) / MAX_VALUE))
        assert torch.allclose(d.x[i][~d.annotation[i]], torch.full((60,), 3.0 / MAX_VALUE))
        c = int(d.corner[i])
        r0 = 0 if c < 2 else 6
        c0 = 0 if c % 2 == 0 else 6
        assert d.annotation[i].view(8, 8)[r0:r0 + 2, c0:c0 + 2].all()
    assert len(set(d.corner.tolist())) == 4  # all corners used
    assert torch.allclose(d.clean, images.flatten(1) / MAX_VALUE)


def test_decoy_test_patch_is_random():
    g = torch.Generator().manual_seed(1)
    labels = torch.zeros(500, dtype=torch.long)
    d = add_decoy(torch.zeros(500, 8, 8), labels, train=False, patch=2, generator=g)
    shades = torch.stack([d.x[i][d.annotation[i]][0] for i in range(500)])
    values = torch.round((MAX_VALUE - shades * MAX_VALUE) / 1.6).long()
    assert set(values.tolist()) == set(range(10))  # not tied to the label (all 0 here)


def test_decoy_rejects_bad_input():
    with pytest.raises(ValueError, match="images"):
        add_decoy(torch.zeros(3, 4, 4), torch.zeros(3, dtype=torch.long), True)
    with pytest.raises(ValueError, match="patch"):
        add_decoy(torch.zeros(3, 8, 8), torch.zeros(3, dtype=torch.long), True, patch=5)


def test_cli_decoy_digits_smoke(tmp_path):
    pytest.importorskip("sklearn")
    from hardkuma_attention.cli import explain_main as main
    import json

    assert main(["decoy-digits", "--out", str(tmp_path), "--seeds", "0", "--epochs", "2",
                 "--mask-examples", "0", "--mask-stat-examples", "0"]) == 0
    res = json.loads((tmp_path / "decoy_digits.json").read_text())
    assert {r["rrr"] for r in res["runs"]} == {False, True}
    assert res["summary"]["patch2_rrr"]["lambda1"] > 0
