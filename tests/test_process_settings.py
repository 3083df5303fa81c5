"""Issue #12, "no import changes process-wide settings": importing every module of
hardkuma_attention and fairseq_plugins leaves os.environ, torch's thread count, deterministic
algorithms, flush-denormal, the default dtype, the warnings filters and matplotlib's backend as a
fresh process that imported only torch (and fairseq, and the transformers modules that the
integration wraps) has them; the command lines restore torch's
thread count and flush-denormal state after a call."""
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import importlib, json, os, pkgutil, sys, warnings
import torch
try:
    import fairseq  # noqa: F401  (the baseline has fairseq's own import effects too)
except ImportError:
    pass
try:  # and those of the transformers modules the integration imports (they set inductor's cache
    import transformers.masking_utils, transformers.modeling_utils  # noqa: E401,F401  dir, filters)
except Exception:  # not installed, or broken beside this torch (see integrations.transformers)
    pass
modules = []
if sys.argv[1] == "all":
    for top in ("hardkuma_attention", "fairseq_plugins"):
        try:
            package = importlib.import_module(top)
        except ImportError:  # fairseq_plugins without fairseq
            continue
        modules.append(top)
        for info in pkgutil.walk_packages(package.__path__, top + "."):
            if info.name.endswith("__main__"):
                continue  # runs a command line
            try:
                importlib.import_module(info.name)
            except ImportError as err:  # an optional extra that is not installed
                if "fairseq" in str(err) or "matplotlib" in str(err) or "sklearn" in str(err):
                    continue
                raise
            modules.append(info.name)
print(json.dumps({
    "modules": modules,
    "environ": dict(os.environ),
    "threads": torch.get_num_threads(),
    "interop": torch.get_num_interop_threads(),
    "deterministic": torch.are_deterministic_algorithms_enabled(),
    "flush_denormal": float(torch.tensor([1e-40], dtype=torch.float32).mul(1.0)) == 0.0,
    "dtype": str(torch.get_default_dtype()),
    "grad": torch.is_grad_enabled(),
    "warnings": [repr(f) for f in warnings.filters],
    "mpl_backend": sys.modules["matplotlib"].rcParams._get_backend_or_none() if "matplotlib" in sys.modules else None,
}))
"""


def _probe(what):
    out = subprocess.run([sys.executable, "-c", _PROBE, what], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_every_module_changes_no_process_setting():
    fresh, after = _probe("fresh"), _probe("all")
    assert len(after.pop("modules")) > 20 and fresh.pop("modules") == []
    if after["mpl_backend"] is None or fresh["mpl_backend"] is None:
        after.pop("mpl_backend"), fresh.pop("mpl_backend")
    assert after == fresh


def test_flush_denormal_probe_sees_the_setting():
    from hardkuma_attention.rationale.settings import flush_denormal_enabled, restored_torch_settings

    before = flush_denormal_enabled()
    with restored_torch_settings():
        if torch.set_flush_denormal(not before):  # False: the CPU cannot flush, nothing to check
            assert flush_denormal_enabled() == (not before)
        torch.set_num_threads(3)
    assert flush_denormal_enabled() == before


def test_command_restores_threads_and_flush_denormal(tmp_path, monkeypatch):
    from hardkuma_attention.cli import common as cli
    from hardkuma_attention.rationale.settings import flush_denormal_enabled

    threads, flush = torch.get_num_threads(), flush_denormal_enabled()

    def command(args):
        torch.set_num_threads(threads + 2)
        torch.set_flush_denormal(not flush)
        raise cli.UsageError("--x: failed midway")

    assert cli.run_command("prog", command, type("A", (), {"debug": False})()) == 2
    assert torch.get_num_threads() == threads and flush_denormal_enabled() == flush
