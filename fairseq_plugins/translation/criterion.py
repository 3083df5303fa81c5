r"""``label_smoothed_cross_entropy_l0``: label-smoothed cross-entropy + Lagrangian L0 constraint.

    loss = sum_tokens LS-CE  +  sample_size * stopgrad(lambda) * c_hat(mean P(z != 0) - l0_target)

The constraint part (``--l0-target``, ``--l0-keys``, ``--l0-preset``, ``--l0-lagrange-lr``, ... and the logged
``l0``/``nz``/``lambda`` metrics, also per attention type: ``l0_cross``, ``nz_cross``,
``l0_encoder_self``, ...) is the shared :class:`fairseq_plugins.common.LagrangianL0Criterion`;
this module only adds fairseq's label-smoothed loss (:func:`label_smoothed_nll_loss`) to it.
``logging_output["loss"]`` stays the task loss so train/valid losses and perplexities compare
with the softmax baseline; the penalty is logged as ``l0_penalty``.
"""

from dataclasses import dataclass

from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
    label_smoothed_nll_loss,
)

from ..common import LagrangianL0, LagrangianL0Config, LagrangianL0Criterion

__all__ = ["LabelSmoothedCrossEntropyL0Config", "LabelSmoothedCrossEntropyL0Criterion"]


@dataclass
class LabelSmoothedCrossEntropyL0Config(LabelSmoothedCrossEntropyCriterionConfig, LagrangianL0Config):
    pass


@register_criterion("label_smoothed_cross_entropy_l0", dataclass=LabelSmoothedCrossEntropyL0Config)
class LabelSmoothedCrossEntropyL0Criterion(LagrangianL0Criterion):
    """See the module docstring.  Shapes: decoder logits ``(B, T, V)``, targets ``(B, T)``."""

    def __init__(self, cfg: LabelSmoothedCrossEntropyL0Config, task):
        super().__init__(task, cfg)
        self.sentence_avg = cfg.sentence_avg
        self.eps = cfg.label_smoothing
        self.ignore_prefix_size = cfg.ignore_prefix_size
        self.report_accuracy = cfg.report_accuracy

    def _lprobs_and_target(self, model, net_output, sample):
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        target = model.get_targets(sample, net_output)
        if self.ignore_prefix_size > 0:
            lprobs = lprobs[:, self.ignore_prefix_size:, :].contiguous()
            target = target[:, self.ignore_prefix_size:].contiguous()
        return lprobs.view(-1, lprobs.size(-1)), target.view(-1)

    def forward(self, model, sample, reduce=True):
        net_output, stats = self.forward_collecting_stats(model, sample["net_input"])
        lprobs, target = self._lprobs_and_target(model, net_output, sample)
        loss, nll_loss = label_smoothed_nll_loss(lprobs, target, self.eps, ignore_index=self.padding_idx, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if self.report_accuracy:
            mask = target.ne(self.padding_idx)
            n_correct = lprobs.argmax(1).masked_select(mask).eq(target.masked_select(mask)).sum()
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(mask.sum())
        loss = self.add_l0_penalty(loss, stats, sample_size, logging_output)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        LabelSmoothedCrossEntropyCriterion.reduce_metrics(logging_outputs)
        LagrangianL0.reduce_metrics(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
