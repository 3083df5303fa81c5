"""fairseq plugin package: ``fairseq-train --user-dir fairseq_plugins ...``.

Importing it registers the tasks, models, architectures and criteria of this project with fairseq
(each subpackage registers its own on import).  Built on :mod:`hardkuma_attention`.

fairseq checkpoints (argparse Namespaces, omegaconf configs) do not load with torch's
``weights_only=True`` default (torch >= 2.6).  The plugin changes no environment variable and no
torch default: it wraps fairseq's own checkpoint loader, ``checkpoint_utils.load_checkpoint_to_cpu``,
so that full pickle is used inside that call only (:mod:`fairseq_plugins.checkpoints`);
fairseq-generate, fairseq-validate, resume / ``--restore-file`` and
:class:`~fairseq_plugins.nli.predict.NLIPredictor` load through it.  Only load checkpoints you trust.
"""
from . import checkpoints

checkpoints.install()

from . import common  # noqa: E402,F401
from . import nli  # noqa: E402,F401
from . import translation  # noqa: E402,F401
