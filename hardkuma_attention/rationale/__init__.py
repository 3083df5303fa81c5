r"""Standalone rationale models: HardKuma (or Bernoulli) token selection for text classification.

Bastings, Aziz & Titov (ACL 2019), Sections 3-4; baseline: Lei, Barzilay & Jaakkola (EMNLP 2016).

Modules (each usable on its own):

- :mod:`.data`        readers (SST trees, ERASER, BeerAdvocate, generic jsonl/tsv) -> :class:`Example`;
- :mod:`.embeddings`  :class:`Vocab`, GloVe reading, embedding matrices;
- :mod:`.models`      selectors (independent / dependent HardKuma, Bernoulli), classifier, full model;
- :mod:`.objectives`  task loss + Lagrangian selection / transition constraints; REINFORCE;
- :mod:`.metrics`     accuracy, token P/R/F1, IOU-F1, ERASER comprehensiveness / sufficiency;
- :mod:`.highlight`   HTML page and terminal highlighting of rationales;
- :mod:`.labels`      :class:`LabelMap` (class names <-> ids);
- :mod:`.pipeline`    :class:`Pipeline`: batching, predict, evaluate, save;
- :mod:`.checkpoints` ``model.pt`` (:func:`load_pipeline`) and the resumable ``checkpoint_last.pt``;
- :mod:`.train`       the one trainer (:func:`train`, :class:`TrainConfig`);
- :mod:`.plot`        accuracy vs % selected;  :mod:`.report`  Markdown results tables;
- :mod:`.io`          atomic output files;
- (command line: :mod:`hardkuma_attention.cli`, ``hardkuma-rationale train|evaluate|predict|plot|table``).

Importing this package imports torch but not tqdm or matplotlib (those load when used).
"""
from .data import DataFormatError, Example, read_examples
from .models import ModelConfig, RationaleModel
from .objectives import ObjectiveConfig, RationaleObjective
from .checkpoints import load_pipeline
from .labels import LabelMap
from .pipeline import Pipeline
from .train import TrainConfig, train

__all__ = [
    "DataFormatError",
    "Example",
    "LabelMap",
    "ModelConfig",
    "ObjectiveConfig",
    "Pipeline",
    "RationaleModel",
    "RationaleObjective",
    "TrainConfig",
    "load_pipeline",
    "read_examples",
    "train",
]
