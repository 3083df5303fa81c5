"""The shape of the code base, read from the source files with ``ast`` (nothing is imported).

Rules (docs/ARCHITECTURE.md, issue #13):

(a) the core (``distributions``, ``fused``, ``functional``, ``attention``, ``constraints``,
    ``stats``, ``masks``, ``streaming``, ``config``, ``triton_kernels``, and the package's
    ``__init__`` and ``convert``) imports nothing above it: not ``fairseq``, ``fairseq_plugins``,
    ``transformers``, nor ``hardkuma_attention.{rationale,explain,cli,integrations}``;
(b) ``hardkuma_attention/rationale/**`` imports neither ``explain`` nor ``cli``;
(c) ``hardkuma_attention/explain/**`` does not import ``cli``
    (``__main__.py`` files are the CLI's doors and exempt from (b) and (c));
(d) no ``.py`` file under ``recipes/``, ``tests/`` or ``benchmarks/`` edits ``sys.path`` (a
    call such as ``sys.path.insert``, an assignment, or such code in a string run by a
    subprocess), and no shell script there sets ``PYTHONPATH`` except the test runner's and the
    environment's (``tests/run.sh``, ``.ci/run``, ``recipes/setup_env.sh``): the packages are
    installed or put on the path by those;
(e) no function of the packages (``hardkuma_attention``, ``fairseq_plugins``) is longer than
    60 lines (decorators excluded, docstring included).

Imports are found anywhere in a file (function-level imports too), relative ones resolved
against the file's package; ``importlib.import_module("...")`` and ``__import__("...")`` with a
constant name count as imports.  Every rule reports all its offenders, and each has a self-test
on a synthetic source that breaks it, so the check itself can fail.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "hardkuma_attention"
CORE_MODULES = ("distributions", "fused", "functional", "attention", "constraints", "stats", "masks", "streaming",
                "config", "triton_kernels", "__init__", "convert")
ABOVE_CORE = ("fairseq", "fairseq_plugins", "transformers", f"{PKG}.rationale", f"{PKG}.explain", f"{PKG}.cli",
              f"{PKG}.integrations")
PACKAGES = (PKG, "fairseq_plugins")
SCRIPT_DIRS = ("recipes", "tests", "benchmarks")
PYTHONPATH_ALLOWED = ("tests/run.sh", ".ci/run", "recipes/setup_env.sh")
MAX_FUNCTION_LINES = 60
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()  # its synthetic sources are strings



# ---------------------------------------------------------------------- checkers (pure functions)


def module_name(rel: str) -> Tuple[str, bool]:
    """``("pkg.sub.mod", is_package)`` of a repository-relative ``.py`` path."""
    parts = rel[:-3].split("/")
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of ``from <level dots><node.module> import ...`` inside ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _dynamic_import(node: ast.Call):
    """The constant module name of ``importlib.import_module("x")`` / ``__import__("x")``, else None."""
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imported_modules(source: str, module: str, is_package: bool = False) -> List[Tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``source`` (``from m import x`` gives both
    ``m`` and ``m.x``, since ``x`` may be a submodule)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}" if base else a.name) for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            found.append((node.lineno, _dynamic_import(node)))
    return found


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def forbidden_imports(rel: str, source: str, forbidden: Iterable[str]) -> List[str]:
    """``"path:line imports name"`` for each import of ``source`` (file ``rel``) under ``forbidden``."""
    module, is_package = module_name(rel)
    forbidden = tuple(forbidden)
    hits = {(line, name) for line, name in imported_modules(source, module, is_package) if _under(name, forbidden)}
    # ``from m import x`` where ``m`` is a hit already: name ``m`` once
    hits = {(line, name) for line, name in hits if not any(_under(name, (n,)) and n != name for l, n in hits if l == line)}
    return [f"{rel}:{line} imports {name}" for line, name in sorted(hits)]


def _is_sys_path(node) -> bool:
    """``sys.path`` (or ``sys.path[...]``)."""
    if isinstance(node, ast.Subscript):
        node = node.value
    return isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) \
        and node.value.id == "sys"


_SYS_PATH_TEXT = re.compile(r"\bsys\.path\s*(\.\s*(insert|append|extend)\s*\(|\+=|=[^=]|\[[^\]]*\]\s*=[^=])")


def sys_path_edits(source: str) -> List[int]:
    """Lines of ``source`` that modify ``sys.path``: ``sys.path.insert/append/extend(...)``,
    ``sys.path = ...``, ``sys.path[...] = ...``, ``sys.path += ...``, or a string constant
    holding such code (run by a subprocess)."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("insert", "append", "extend") and _is_sys_path(node.func.value):
            lines.add(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_is_sys_path(t) for t in targets):
                lines.add(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _SYS_PATH_TEXT.search(node.value):
            lines.add(node.lineno)
    return sorted(lines)


_PYTHONPATH_SET = re.compile(r"^\s*(export\s+|declare\s+-x\s+)?PYTHONPATH=", re.M)


def pythonpath_exports(text: str) -> List[int]:
    """Lines of a shell script that set ``PYTHONPATH`` (``PYTHONPATH=...`` or ``export
    PYTHONPATH=...`` at the start of a line)."""
    return [text.count("\n", 0, m.start()) + 1 for m in _PYTHONPATH_SET.finditer(text)]


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> List[Tuple[int, str, int]]:
    """``(line, name, length)`` of every function of ``source`` longer than ``limit`` lines."""
    rows = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                rows.append((node.lineno, node.name, n))
    return sorted(rows)


# ---------------------------------------------------------------------- the repository's files


def _py_files(*dirs: str) -> Dict[str, str]:
    """``{repository-relative path: source}`` of the ``.py`` files under ``dirs``."""
    out = {}
    for d in dirs:
        for p in sorted((ROOT / d).rglob("*.py")):
            if ".venv" not in p.parts and "__pycache__" not in p.parts:
                out[p.relative_to(ROOT).as_posix()] = p.read_text(encoding="utf-8")
    return out


def _report(offenders: List[str], what: str) -> str:
    return f"{len(offenders)} {what}:\n  " + "\n  ".join(offenders)


def _layer_offenders(directory: str, forbidden: Tuple[str, ...]) -> List[str]:
    files = {rel: src for rel, src in _py_files(directory).items() if not rel.endswith("/__main__.py")}
    assert files, f"no .py files under {directory}"
    return [hit for rel, src in files.items() for hit in forbidden_imports(rel, src, forbidden)]


# ---------------------------------------------------------------------- the rules


def test_core_imports_nothing_above_it():
    """(a)"""
    offenders = []
    for name in CORE_MODULES:
        rel = f"{PKG}/{name}.py"
        offenders += forbidden_imports(rel, (ROOT / rel).read_text(encoding="utf-8"), ABOVE_CORE)
    assert not offenders, _report(offenders, "imports from the core into the layers above it")


def test_rationale_imports_neither_explain_nor_cli():
    """(b)"""
    offenders = _layer_offenders(f"{PKG}/rationale", (f"{PKG}.explain", f"{PKG}.cli"))
    assert not offenders, _report(offenders, "imports from rationale into explain / cli")


def test_explain_does_not_import_cli():
    """(c)"""
    offenders = _layer_offenders(f"{PKG}/explain", (f"{PKG}.cli",))
    assert not offenders, _report(offenders, "imports from explain into cli")


def test_no_script_edits_sys_path():
    """(d) Python files."""
    files = {rel: src for rel, src in _py_files(*SCRIPT_DIRS).items() if rel != SELF}
    offenders = [f"{rel}:{line}" for rel, src in files.items() for line in sys_path_edits(src)]
    assert not offenders, _report(offenders, "sys.path edits (set PYTHONPATH in the runner / install the package)")


def test_only_the_runners_set_pythonpath():
    """(d) Shell scripts."""
    scripts = sorted(p for d in SCRIPT_DIRS for p in (ROOT / d).rglob("*.sh") if ".venv" not in p.parts)
    offenders = [f"{p.relative_to(ROOT).as_posix()}:{line}" for p in scripts
                 if p.relative_to(ROOT).as_posix() not in PYTHONPATH_ALLOWED
                 for line in pythonpath_exports(p.read_text(encoding="utf-8"))]
    assert not offenders, _report(offenders, f"PYTHONPATH settings outside {PYTHONPATH_ALLOWED}")


def test_no_function_longer_than_60_lines():
    """(e)"""
    offenders = [f"{rel}:{line} {name} ({n} lines)" for rel, src in _py_files(*PACKAGES).items()
                 for line, name, n in long_functions(src)]
    assert not offenders, _report(offenders, f"functions over {MAX_FUNCTION_LINES} lines")


# ---------------------------------------------------------------------- the checkers can fail


def test_checker_catches_core_imports():
    src = ("import fairseq.models\nfrom transformers import AutoModel\nfrom .rationale import models\n"
           "from . import explain\nfrom .integrations.transformers import register\n"
           "def f():\n    from .cli import main\n    importlib.import_module('fairseq_plugins.nli')\n"
           "from .stats import gate_stats\nimport torch\n")
    hits = forbidden_imports(f"{PKG}/functional.py", src, ABOVE_CORE)
    assert sorted({int(h.split(" imports ")[0].rsplit(":", 1)[1]) for h in hits}) == [1, 2, 3, 4, 5, 7, 8], hits
    assert f"{PKG}/functional.py:3 imports {PKG}.rationale" in hits
    # from a sub-package, ``..`` is the package root
    assert forbidden_imports(f"{PKG}/integrations/x.py", "from ..explain import mask\n", ABOVE_CORE) \
        == [f"{PKG}/integrations/x.py:1 imports {PKG}.explain"]
    assert forbidden_imports(f"{PKG}/functional.py", "from .stats import x\nimport transformers_lite\n",
                             ABOVE_CORE) == []


def test_checker_catches_rationale_importing_explain_or_cli():
    src = "from ..explain.mask import MaskConfig\nfrom hardkuma_attention.cli import main\nfrom . import models\n"
    hits = forbidden_imports(f"{PKG}/rationale/train.py", src, (f"{PKG}.explain", f"{PKG}.cli"))
    assert {h.split(" imports ")[0] for h in hits} == {f"{PKG}/rationale/train.py:1", f"{PKG}/rationale/train.py:2"}


def test_checker_catches_explain_importing_cli():
    src = "from .. import cli\n"
    assert forbidden_imports(f"{PKG}/explain/text.py", src, (f"{PKG}.cli",)) == [f"{PKG}/explain/text.py:1 imports {PKG}.cli"]
    # a package's __init__: ``.`` is the package itself
    assert forbidden_imports(f"{PKG}/explain/__init__.py", "from ..cli import x\n", (f"{PKG}.cli",))


def test_checker_catches_sys_path_edits():
    src = ("import sys\nsys.path.insert(0, 'x')\nsys.path.append('y')\nsys.path.extend(['z'])\n"
           "sys.path = ['a'] + sys.path\nsys.path[0] = 'b'\nsys.path += ['c']\n"
           "code = 'import sys; sys.path.insert(0, \"d\")'\nprint(sys.path)\nok = 'sys.path' == 'x'\n")
    assert sys_path_edits(src) == [2, 3, 4, 5, 6, 7, 8]


def test_checker_catches_pythonpath_exports():
    text = ('#!/bin/bash\nexport PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"\n  PYTHONPATH=. python x.py\n'
            'echo "$PYTHONPATH"\n# PYTHONPATH=no (a comment)\n')
    assert pythonpath_exports(text) == [2, 3]


def test_checker_catches_long_functions():
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    src = (f"def short():\n    return 1\n\n\ndef long():\n{body}\n\n\nclass C:\n    def method(self):\n"
           + body.replace("    x", "        x") + "\n        return 0\n")
    assert long_functions(src) == [(5, "long", 81), (89, "method", 82)]
