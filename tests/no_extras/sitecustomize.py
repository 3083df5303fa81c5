"""Hide the extras' modules from this Python process, as if only the core install were present.

Put this folder first on ``PYTHONPATH`` and list the top-level module names in
``HARDKUMA_HIDE_MODULES`` (comma-separated).  Each gets ``sys.modules[name] = None``: ``import
tqdm`` (or ``tqdm.auto``) then raises ``ModuleNotFoundError`` and ``importlib.util.find_spec``
returns ``None``, as on a machine without that package.  Used by ``tests/test_core_install.py``;
does nothing when the variable is unset.
"""
import os
import sys

for _name in os.environ.get("HARDKUMA_HIDE_MODULES", "").split(","):
    if _name.strip():
        sys.modules[_name.strip()] = None
