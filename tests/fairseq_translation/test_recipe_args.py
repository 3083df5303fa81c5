"""The fairseq-train argument lists of ``recipes/multi30k/train.sh`` and ``recipes/snli/train.sh``,
read by putting a fake ``fairseq-train`` (it writes its argv) first on PATH (no fairseq needed).

Issue #13: Multi30k passes the controller as ``--l0-preset multi30k`` (the preset holds the four
values it used to pass flag by flag) and passes ``--l0-lagrange-lr`` and friends only when
``L0_LR`` etc. are set; both recipes give ``--user-dir`` the folder of the importable
``fairseq_plugins`` (here: this checkout, on PYTHONPATH).
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE = '#!/usr/bin/env bash\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$ARGS_OUT"\n'


def _argv(tmp_path, script, *args, **env):
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    (fake / "fairseq-train").write_text(FAKE)
    (fake / "fairseq-train").chmod(0o755)
    for d, name in (("m30k_bin", "dict.de.txt"), ("snli_bin", "dict.input0.txt")):
        (tmp_path / d).mkdir(exist_ok=True)
        (tmp_path / d / name).write_text("a 1\n")
    out = tmp_path / "argv.txt"
    path = os.pathsep.join([str(fake), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    full_env = dict(os.environ, PATH=path, PYTHONPATH=str(ROOT), ARGS_OUT=str(out), DATA_BIN=str(tmp_path / "m30k_bin"),
                    SNLI_BIN=str(tmp_path / "snli_bin"), SNLI_WORK=str(tmp_path / "snli"), GLOVE="none",
                    VIRTUAL_ENV=str(Path(sys.executable).parent.parent), **env)
    for k in ("L0_LR", "L0_ALPHA", "L0_LAMBDA_INIT", "L0_LAMBDA_MAX", "L0_TARGET", "FRESH"):
        if k not in env:
            full_env.pop(k, None)
    subprocess.run(["bash", str(ROOT / "recipes" / script), *args], env=full_env, capture_output=True, text=True,
                   timeout=120)
    return out.read_text().splitlines()


def _flags(argv):
    """``{flag: value}`` of the ``--flag value`` pairs (a bare flag maps to None)."""
    out = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            out[a] = None if nxt is None or nxt.startswith("--") else nxt
    return out


CONTROLLER_FLAGS = ("--l0-lagrange-lr", "--l0-lagrange-alpha", "--l0-lambda-init", "--l0-lambda-max")


def test_multi30k_passes_the_preset_and_overrides_only_when_set(tmp_path):
    for attention in ("softmax", "hardkuma", "hardkuma_all"):
        flags = _flags(_argv(tmp_path, "multi30k/train.sh", attention, str(tmp_path / f"ckpt_{attention}")))
        assert flags["--l0-preset"] == "multi30k", attention
        assert not set(CONTROLLER_FLAGS) & set(flags), attention
        assert flags["--user-dir"] == str(ROOT / "fairseq_plugins")
    flags = _flags(_argv(tmp_path, "multi30k/train.sh", "hardkuma", str(tmp_path / "ckpt_env"),
                         L0_LR="0.02", L0_ALPHA="0.95", L0_LAMBDA_INIT="1e-3", L0_LAMBDA_MAX="0.5"))
    assert flags["--l0-preset"] == "multi30k" and flags["--l0-target"] == "0.2" and flags["--l0-keys"] == "cross"
    assert [flags[f] for f in CONTROLLER_FLAGS] == ["0.02", "0.95", "1e-3", "0.5"]


def test_snli_hardkuma_arguments(tmp_path):
    argv = _argv(tmp_path, "snli/train.sh", "hardkuma", SAVE_DIR=str(tmp_path / "hk"))
    flags = _flags(argv)
    assert argv[0] == str(tmp_path / "snli_bin") and flags["--user-dir"] == str(ROOT / "fairseq_plugins")
    assert (flags["--l0-target"], flags["--l0-lagrange-lr"], flags["--l0-lambda-init"]) == ("0.1", "0.05", "1e-4")
    assert "--l0-preset" not in flags  # the paper's controller with the recipe's lr and lambda_init
