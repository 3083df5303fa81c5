"""Metric functions against hand-computed values."""
import pytest
import torch

from hardkuma_attention.rationale.metrics import (
    accuracy,
    comprehensiveness,
    faithfulness,
    iou_f1,
    mean_squared_error,
    span_iou,
    sufficiency,
    token_prf,
)

T, F = True, False


def test_accuracy_and_mse():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 0]) == 0.5
    assert mean_squared_error([0.5, 1.0], [0.0, 0.0]) == pytest.approx((0.25 + 1.0) / 2)
    with pytest.raises(ValueError):
        accuracy([1], [1, 2])


def test_token_prf_micro_and_macro():
    pred = [[T, T, F, F], [T, F, F]]
    gold = [[T, F, F, T], [T, T, T]]
    # micro: TP = 1 + 1, predicted = 2 + 1, gold = 2 + 3
    m = token_prf(pred, gold, "micro")
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 5)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))
    # macro: instance 1 P=1/2 R=1/2 F=1/2; instance 2 P=1 R=1/3 F=1/2
    M = token_prf(pred, gold, "macro")
    assert M["precision"] == pytest.approx(0.75) and M["recall"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert M["f1"] == pytest.approx(0.5)


def test_token_prf_empty_prediction_is_zero():
    assert token_prf([[F, F]], [[T, F]])["f1"] == 0.0


def test_span_iou():
    assert span_iou((0, 4), (2, 6)) == pytest.approx(2 / 6)
    assert span_iou((0, 2), (2, 4)) == 0.0


def test_iou_f1_partial_match():
    # gold spans: [0,4) and [6,8); predicted: [1,4) (IOU 3/4 with [0,4)), [5,6) (no overlap),
    # [7,10) (IOU 1/4 with [6,8)) -> TP_pred = 1 of 3, TP_gold = 1 of 2.
    gold = [[T, T, T, T, F, F, T, T, F, F]]
    pred = [[F, T, T, T, F, T, F, T, T, T]]
    m = iou_f1(pred, gold)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert iou_f1(pred, gold, threshold=0.2)["precision"] == pytest.approx(2 / 3)


def test_comprehensiveness_sufficiency():
    assert comprehensiveness([0.9, 0.8], [0.5, 0.8]) == pytest.approx(0.2)
    assert sufficiency([0.9, 0.8], [0.9, 0.6]) == pytest.approx(0.1)


def test_faithfulness_uses_the_right_masks():
    # A "model" whose P(class 1) is the fraction of kept tokens among the first three positions.
    def predict_proba(keep):
        p1 = keep[:, :3].float().mean(1)
        return torch.stack([1 - p1, p1], -1)

    valid = torch.tensor([[T, T, T, T]])
    rationale = torch.tensor([[T, F, F, T]])
    out = faithfulness(predict_proba, valid, rationale)
    # full: p1 = 1 (class 1 predicted); without r: keep [F,T,T,F] -> 2/3; only r: [T,F,F,T] -> 1/3
    assert out["comprehensiveness"][0] == pytest.approx(1 / 3)
    assert out["sufficiency"][0] == pytest.approx(2 / 3)
