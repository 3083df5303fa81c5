r"""fairseq task ``nli``: sentence-pair classification with premise and hypothesis kept apart.

Data layout (``recipes/snli/preprocess.sh`` writes it with two ``fairseq-preprocess`` calls)::

    DATA/dict.input0.txt                     shared word dictionary (dict.input1.txt is identical)
    DATA/{split}.input0-input1.input0.*      premises     (pair mode, --joined-dictionary)
    DATA/{split}.input0-input1.input1.*      hypotheses
    DATA/dict.label.txt, DATA/{split}.label-None.label.*   labels (--only-source)

A batch (``sample``) is::

    net_input: premise (B, P) long, right-padded; premise_lengths (B,);
               hypothesis (B, H) long, right-padded; hypothesis_lengths (B,)
    target:    (B,) long class ids in [0, num_classes)
    ntokens:   number of premise + hypothesis words (what fairseq's words/s counts)

The end-of-sentence symbol ``fairseq-preprocess`` appends is stripped; an empty sentence gives a
row of padding only (the model's NULL token, when on, keeps every attention row non-empty).
"""

import logging
import os
from dataclasses import dataclass, field

import numpy as np
from fairseq.data import (
    Dictionary,
    IdDataset,
    NestedDictionaryDataset,
    NumelDataset,
    NumSamplesDataset,
    OffsetTokensDataset,
    RightPadDataset,
    SortDataset,
    StripTokenDataset,
    data_utils,
)
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING, open_dict

logger = logging.getLogger(__name__)

PAIR = "input0-input1"


@dataclass
class NLIConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "binarised data directory (see the module doc)"})
    num_classes: int = field(default=3, metadata={"help": "number of labels"})
    max_positions: int = field(default=1024, metadata={"help": "longest sentence (words) kept"})
    seed: int = II("common.seed")


def _load(path: str, dictionary: Dictionary, what: str):
    dataset = data_utils.load_indexed_dataset(path, dictionary)
    if dataset is None:
        raise FileNotFoundError(f"nli task: {what} not found at {path}.{{bin,idx}} (run recipes/snli/preprocess.sh)")
    return dataset


@register_task("nli", dataclass=NLIConfig)
class NLITask(FairseqTask):
    """Premise/hypothesis classification; see the module docstring for data and batch layout."""

    cfg: NLIConfig

    def __init__(self, cfg: NLIConfig, dictionary: Dictionary, label_dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.label_dictionary = label_dictionary

    @classmethod
    def setup_task(cls, cfg: NLIConfig, **kwargs):
        paths = cfg.data.split(os.pathsep)
        if not paths or not paths[0]:
            raise ValueError("nli task: --data (the binarised data directory) is required")
        data = paths[0]
        for name in ("dict.input0.txt", "dict.label.txt"):
            if not os.path.isfile(os.path.join(data, name)):
                raise FileNotFoundError(f"nli task: {os.path.join(data, name)} missing (run recipes/snli/preprocess.sh)")
        dictionary = Dictionary.load(os.path.join(data, "dict.input0.txt"))
        label_dictionary = Dictionary.load(os.path.join(data, "dict.label.txt"))
        n_labels = len(label_dictionary) - label_dictionary.nspecial
        if n_labels != cfg.num_classes:
            raise ValueError(
                f"nli task: {os.path.join(data, 'dict.label.txt')} has {n_labels} labels, "
                f"--num-classes is {cfg.num_classes}"
            )
        logger.info(f"[nli] dictionary: {len(dictionary)} types, labels: {label_dictionary.symbols[label_dictionary.nspecial:]}")
        return cls(cfg, dictionary, label_dictionary)

    def label_names(self):
        """Class names in the order of the model's output columns."""
        return self.label_dictionary.symbols[self.label_dictionary.nspecial:]

    def load_dataset(self, split: str, combine: bool = False, epoch: int = 1, **kwargs):
        data = self.cfg.data.split(os.pathsep)[0]
        pre = os.path.join(data, f"{split}.{PAIR}.")
        premise = StripTokenDataset(_load(pre + "input0", self.dictionary, f"{split} premises"), self.dictionary.eos())
        hypothesis = StripTokenDataset(_load(pre + "input1", self.dictionary, f"{split} hypotheses"), self.dictionary.eos())
        labels = _load(os.path.join(data, f"{split}.label-None.label"), self.label_dictionary, f"{split} labels")
        target = OffsetTokensDataset(
            StripTokenDataset(labels, self.label_dictionary.eos()), offset=-self.label_dictionary.nspecial
        )
        if not (len(premise) == len(hypothesis) == len(labels)):
            raise ValueError(
                f"nli task: {split} has {len(premise)} premises, {len(hypothesis)} hypotheses, {len(labels)} labels"
            )
        pad = self.dictionary.pad()
        sizes = np.maximum(premise.sizes, hypothesis.sizes)
        dataset = NestedDictionaryDataset(
            {
                "id": IdDataset(),
                "net_input": {
                    "premise": RightPadDataset(premise, pad_idx=pad),
                    "premise_lengths": NumelDataset(premise, reduce=False),
                    "hypothesis": RightPadDataset(hypothesis, pad_idx=pad),
                    "hypothesis_lengths": NumelDataset(hypothesis, reduce=False),
                },
                "target": target,
                "nsentences": NumSamplesDataset(),
                "ntokens": _SumDataset(NumelDataset(premise, reduce=True), NumelDataset(hypothesis, reduce=True)),
            },
            sizes=[sizes],
        )
        with data_utils.numpy_seed(self.cfg.seed, epoch):
            shuffle = np.random.permutation(len(dataset))
        # Shuffle, then stable-sort by length so batches hold similar lengths (as sentence_prediction).
        self.datasets[split] = SortDataset(dataset, sort_order=[shuffle, sizes])
        logger.info(f"[nli] {split}: {len(dataset)} pairs")
        return self.datasets[split]

    def build_model(self, cfg, from_checkpoint=False):
        """Build the model; when its weights come from a checkpoint, skip reading the pretrained
        embeddings file again (the checkpoint holds the embedding matrix; the file may be gone)."""
        if from_checkpoint and getattr(cfg, "embeddings_path", None):
            with open_dict(cfg):
                cfg.embeddings_path = None
        return super().build_model(cfg, from_checkpoint)

    def max_positions(self):
        return self.cfg.max_positions

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.label_dictionary


class _SumDataset(NumSamplesDataset):
    """Sum of two reduced ``NumelDataset`` s (the ``ntokens`` of a batch)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def __getitem__(self, index):
        return self.a[index] + self.b[index]

    def __len__(self):
        return len(self.a)

    def collater(self, samples):
        return sum(samples)
