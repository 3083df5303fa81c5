r"""Load a trained NLI checkpoint from Python and predict / inspect attention.

    from fairseq_plugins.nli.predict import NLIPredictor
    nli = NLIPredictor.from_checkpoint("runs/snli/hardkuma/checkpoint_best.pt", "runs/snli/bin")
    out = nli.predict("a man is playing a guitar .", "a person plays music .")
    out.label, out.probs, out.attention   # attention: (P', H') gates / weights, NULL row/col first

Sentences are tokenised by the caller (:func:`fairseq_plugins.nli.prepare_data.tokenize` gives the
recipe's tokenisation); words are split on spaces and unknown words map to ``<unk>``.  The model
runs in eval mode: HardKuma gates are the deterministic ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch

__all__ = ["NLIPredictor", "Prediction"]


@dataclass
class Prediction:
    label: str
    probs: dict
    attention: torch.Tensor  # (P', H') in [0, 1]
    premise_words: List[str]  # row labels (NULL first when the model has a NULL token)
    hypothesis_words: List[str]  # column labels


class NLIPredictor:
    def __init__(self, model, task):
        self.model = model.eval()
        self.task = task

    @classmethod
    def from_checkpoint(cls, checkpoint: str, data_dir: str) -> "NLIPredictor":
        """Load ``checkpoint`` (a fairseq ``checkpoint_*.pt`` of the ``nli`` task); ``data_dir`` is
        the binarised data directory holding ``dict.input0.txt`` and ``dict.label.txt``.  A missing,
        corrupt or foreign checkpoint raises :class:`~fairseq_plugins.checkpoints.CheckpointError`
        (one line naming the file; a command line turns it into exit code 2 with
        :func:`~fairseq_plugins.checkpoints.cli_errors`)."""
        import os

        import fairseq_plugins  # noqa: F401  (registers the task/model; wraps fairseq's checkpoint loader)
        from fairseq import checkpoint_utils

        from ..checkpoints import CheckpointError

        if not os.path.isfile(checkpoint):  # fairseq would raise a bare OSError ("Model file not found")
            raise CheckpointError(f"{checkpoint}: no such checkpoint file")

        models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data_dir})
        return cls(models[0], task)

    def _ids(self, sentence: str) -> torch.Tensor:
        d = self.task.source_dictionary
        ids = d.encode_line(sentence, add_if_not_exist=False, append_eos=False).long()
        return ids.view(1, -1)

    @torch.no_grad()
    def predict(self, premise: str, hypothesis: str) -> Prediction:
        """Classify one tokenised (space-separated) pair."""
        p, h = self._ids(premise), self._ids(hypothesis)
        logits, extra = self.model(premise=p, hypothesis=h)
        probs = torch.softmax(logits[0].float(), -1)
        names = self.task.label_names()
        null = [] if self.model.null is None else ["NULL"]
        return Prediction(
            label=names[int(probs.argmax())],
            probs={n: float(v) for n, v in zip(names, probs)},
            attention=extra["attn"][0].float(),
            premise_words=null + premise.split(),
            hypothesis_words=null + hypothesis.split(),
        )
