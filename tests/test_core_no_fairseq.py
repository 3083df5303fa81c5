"""`hardkuma_attention` (every subpackage) never imports fairseq."""
import subprocess
import sys


def test_package_does_not_import_fairseq():
    code = (
        "import pkgutil, sys, importlib, hardkuma_attention\n"
        "for m in pkgutil.walk_packages(hardkuma_attention.__path__, 'hardkuma_attention.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'fairseq' or n.startswith('fairseq.'))\n"
        "print(len(list(pkgutil.walk_packages(hardkuma_attention.__path__, 'hardkuma_attention.'))))\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) > 10  # it really walked the subpackages
