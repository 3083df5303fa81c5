"""Issue #13: ``pip install .`` installs ``fairseq_plugins`` beside ``hardkuma_attention``, and
``fairseq-train --user-dir <installed fairseq_plugins>`` finds the tasks, models and criteria.

The package is installed with ``pip install --no-deps --no-build-isolation --target`` from a copy
of the sources (the checkout is left untouched) and used from a subprocess whose only project path
is that target (run from outside the checkout, so the repository's copy cannot be imported).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fairseq")

ROOT = Path(__file__).resolve().parents[2]
FAIRSEQ_TRAIN = Path(sys.executable).parent / "fairseq-train"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("hardkuma_attention", "fairseq_plugins"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(src)], capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def _env(target):
    return dict(os.environ, PYTHONPATH=str(target), OMP_NUM_THREADS="1")


def test_install_holds_the_plugin_package(installed):
    code = "import fairseq_plugins, hardkuma_attention, os; print(os.path.dirname(fairseq_plugins.__file__))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=_env(installed), cwd=installed.parent)
    assert proc.returncode == 0, proc.stderr
    plugin_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert plugin_dir == installed / "fairseq_plugins"
    for sub in ("common", "nli", "translation"):
        assert (plugin_dir / sub / "__init__.py").is_file()


@pytest.mark.skipif(not FAIRSEQ_TRAIN.exists(), reason="fairseq-train not installed beside this Python")
def test_fairseq_train_user_dir_is_the_installed_package(installed):
    """fairseq's --help lists the registered names among the choices (not the components' own
    flags): the plugin's task, models and criteria are there only if the user dir was imported."""
    argv = [str(FAIRSEQ_TRAIN), "--user-dir", str(installed / "fairseq_plugins"), "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=_env(installed),
                          cwd=installed.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("nli_cross_entropy", "label_smoothed_cross_entropy_l0"):
        assert name in proc.stdout, name
    # the task, architecture and criterion options come from the installed copy: a bad preset is
    # refused by the criterion's own choices (argparse, exit 2) before anything is read
    argv = [str(FAIRSEQ_TRAIN), str(installed), "--user-dir", str(installed / "fairseq_plugins"), "--task", "nli",
            "--arch", "decomposable_attention_hardkuma", "--criterion", "nli_cross_entropy", "--l0-preset", "nope"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=_env(installed),
                          cwd=installed.parent)
    assert proc.returncode == 2
    assert "argument --l0-preset: invalid choice: 'nope' (choose from 'explain', 'multi30k', 'paper', 'rationale')" \
        in proc.stderr
