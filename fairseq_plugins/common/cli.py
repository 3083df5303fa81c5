"""What the plugin's command lines (``python -m fairseq_plugins.nli.heatmap`` and friends) share
with the project's CLI: :func:`ranged`, the argparse ``type`` with a range check
(``argument --flag: must be >= 1, got 0``, exit code 2)."""
try:  # the CLI package of issue #13
    from hardkuma_attention.cli.common import ranged
except ImportError:  # before it: the rationale CLI module held it
    from hardkuma_attention.rationale.cli import ranged

__all__ = ["ranged"]
