r"""fairseq criterion ``nli_cross_entropy``: cross-entropy + Lagrangian constraint on attention L0.

``loss = sum_batch CE(logits, y) + B * lambda * c_hat(expected_L0 - --l0-target)`` (the penalty only
in training and only when ``--l0-target`` is set; see :mod:`fairseq_plugins.common.lagrangian_l0`).
The logged ``loss`` is the cross-entropy alone (in bits per example, as fairseq's classification
criteria), so train and valid losses compare; ``accuracy`` is in %, ``l0`` / ``nz`` are fractions
of the valid (premise word, hypothesis word) cells, NULL cells included.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fairseq.criterions import register_criterion
from fairseq.logging import metrics

from ..common import LagrangianL0Config, LagrangianL0Criterion


@dataclass
class NLICrossEntropyConfig(LagrangianL0Config):
    pass


@register_criterion("nli_cross_entropy", dataclass=NLICrossEntropyConfig)
class NLICrossEntropyCriterion(LagrangianL0Criterion):
    def __init__(self, cfg: NLICrossEntropyConfig, task):
        super().__init__(task, cfg)

    def forward(self, model, sample, reduce=True):
        (logits, _extra), stats = self.forward_collecting_stats(model, sample["net_input"])
        target = sample["target"].view(-1)
        lprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
        ce = F.nll_loss(lprobs, target, reduction="sum")
        sample_size = target.numel()
        logging_output = {
            "loss": ce.detach(),
            "ntokens": sample["ntokens"],
            "nsentences": sample_size,
            "sample_size": sample_size,
            "ncorrect": (lprobs.argmax(-1) == target).sum().detach(),
        }
        loss = self.add_l0_penalty(ce, stats, sample_size, logging_output)
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss = sum(float(log.get("loss", 0)) for log in logging_outputs)
        n = sum(log.get("sample_size", 0) for log in logging_outputs)
        correct = sum(float(log.get("ncorrect", 0)) for log in logging_outputs)
        metrics.log_scalar("loss", loss / max(n, 1) / math.log(2), n, round=3)
        metrics.log_scalar("accuracy", 100.0 * correct / max(n, 1), n, round=2)
        LagrangianL0Criterion.reduce_metrics(logging_outputs)
