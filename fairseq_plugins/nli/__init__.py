"""NLI with decomposable attention (softmax or HardKuma attend step) for fairseq.

Registers, on import: task ``nli`` (:mod:`.task`), model ``decomposable_attention`` with
architectures ``decomposable_attention`` / ``decomposable_attention_hardkuma`` (:mod:`.model`)
and criterion ``nli_cross_entropy`` (:mod:`.criterion`).  Recipe: ``recipes/snli/``.
"""
from . import criterion, model, task  # noqa: F401
