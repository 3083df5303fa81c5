"""What the plugin's command lines (``python -m fairseq_plugins.nli.heatmap`` and friends) share
with the project's CLI: :func:`ranged`, the argparse ``type`` with a range check
(``argument --flag: must be >= 1, got 0``, exit code 2)."""
from hardkuma_attention.cli.common import ranged

__all__ = ["ranged"]
