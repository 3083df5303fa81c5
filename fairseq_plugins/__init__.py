"""fairseq plugin package: ``fairseq-train --user-dir fairseq_plugins ...``.

Importing it registers the tasks, models, architectures and criteria of this project with fairseq
(each subpackage registers its own on import).  Built on :mod:`hardkuma_attention`.

torch >= 2.6 loads checkpoints with ``weights_only=True`` by default, which fairseq checkpoints
(argparse Namespaces, omegaconf configs) do not pass; the plugin sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (unless the user set it) so that fairseq-generate,
fairseq-validate, ``--restore-file`` and loading from Python work.  Only load checkpoints you trust.
"""
import os

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

from . import common  # noqa: E402,F401
from . import nli  # noqa: E402,F401
from . import translation  # noqa: E402,F401
