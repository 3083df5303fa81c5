"""fairseq plugin package: ``fairseq-train --user-dir <this folder> ...``.

Installed by ``pip install hardkuma-attention[fairseq]`` (``setup.py`` installs it beside
``hardkuma_attention``); its folder is
``python -c "import fairseq_plugins, os; print(os.path.dirname(fairseq_plugins.__file__))"``
(``recipes/fairseq_runs.sh``: ``fairseq_user_dir``).

Importing it registers the tasks, models, architectures and criteria of this project with fairseq
(each subpackage registers its own on import).  Built on :mod:`hardkuma_attention`.

fairseq checkpoints (argparse Namespaces, omegaconf configs) do not load with torch's
``weights_only=True`` default (torch >= 2.6).  The plugin changes no environment variable and no
torch default: it wraps fairseq's own checkpoint loader, ``checkpoint_utils.load_checkpoint_to_cpu``,
so that full pickle is used inside that call only (:mod:`fairseq_plugins.checkpoints`);
fairseq-generate, fairseq-validate, resume / ``--restore-file`` and
:class:`~fairseq_plugins.nli.predict.NLIPredictor` load through it.  Only load checkpoints you trust.
"""
try:
    import fairseq  # noqa: F401
except ImportError as e:  # installed by `pip install hardkuma-attention` without the fairseq extra
    raise ImportError('fairseq_plugins needs fairseq: pip install "hardkuma-attention[fairseq]"') from e

from . import checkpoints  # noqa: E402

checkpoints.install()

from . import common  # noqa: E402,F401
from . import nli  # noqa: E402,F401
from . import translation  # noqa: E402,F401
