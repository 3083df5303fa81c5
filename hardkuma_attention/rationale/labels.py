r"""Class labels <-> ids (:class:`LabelMap`), shared by training, prediction and the checkpoints."""
from __future__ import annotations

from typing import Optional, Sequence

from .data import Example

__all__ = ["LabelMap"]


class LabelMap:
    """Class labels <-> ids; ``LabelMap(None)`` is the regression case (labels are floats)."""

    def __init__(self, names: Optional[Sequence] = None):
        self.names = list(names) if names is not None else None
        self.index = {n: i for i, n in enumerate(self.names)} if self.names is not None else None

    @classmethod
    def from_examples(cls, examples: Sequence[Example], task: str) -> "LabelMap":
        if task == "regression":
            return cls(None)
        return cls(sorted({ex.label for ex in examples}, key=lambda x: (str(type(x)), x)))

    @property
    def is_regression(self) -> bool:
        return self.names is None

    def __len__(self) -> int:
        return 1 if self.names is None else len(self.names)

    def encode(self, label, where: str = "") -> float:
        if self.names is None:
            return float(label)
        if label not in self.index:
            raise ValueError(f"{where}: label {label!r} not seen in training (known: {self.names})")
        return self.index[label]

    def decode(self, value):
        return float(value) if self.names is None else self.names[int(value)]
