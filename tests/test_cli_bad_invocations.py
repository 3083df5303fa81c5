"""Issue #12: every command line of the project refuses bad flags in its parser, before any work:
``--flag: message``, exit code 2, no traceback.  A table of bad invocations walked in-process for
every command (fast), and one bad invocation per entry point run as a user would (console script,
``python -m``, ``python recipes/...``) in subprocesses started at once."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SNLI, M30K, BENCH = ROOT / "recipes" / "snli", ROOT / "recipes" / "multi30k", ROOT / "benchmarks"
TRAIN = ["train", "--format", "jsonl", "--train", "t.jsonl", "--dev", "d.jsonl", "--out", "o"]
EVALUATE = ["evaluate", "--format", "jsonl", "--model", "m.pt", "--data", "d", "--out-dir", "o"]
MASK = ["mask", "--model", "m.pt", "--data", "d.jsonl", "--out", "o"]
RRR = ["rrr-eval", "--models", "a=m.pt", "--data", "d.jsonl", "--out", "o"]
PREPARE = ["--out", "o", "--split", "train=t"]
M30K_PREPARE = ["prepare", "--raw-dir", "r", "--out-dir", "o"]

# entry point -> [(bad argv, flag named in the message)]
TABLE = {
    "rationale": [(TRAIN + ["--epochs", "0"], "--epochs"), (TRAIN + ["--batch-size", "0"], "--batch-size"),
                  (TRAIN + ["--threads", "0"], "--threads"), (TRAIN + ["--gate", "sparsemax"], "--gate"),
                  (TRAIN + ["--selection", "1.5"], "--selection"), (TRAIN + ["--lr", "nan"], "--lr"),
                  (EVALUATE + ["--threads", "0"], "--threads"),
                  (["explain"] + MASK + ["--batch-size", "0"], "--batch-size")],
    "explain": [(MASK + ["--batch-size", "0"], "--batch-size"), (MASK + ["--threads", "0"], "--threads"),
                (MASK + ["--format", "csv"], "--format"), (RRR + ["--batch-size", "0"], "--batch-size"),
                (RRR + ["--threads", "0"], "--threads"), (["decoy-digits", "--out", "o", "--epochs", "0"], "--epochs"),
                (["decoy-digits", "--out", "o", "--threads", "0"], "--threads")],
    SNLI / "prepare_data.py": [(PREPARE + ["--max-examples", "train=-1"], "--max-examples"),
                               (PREPARE + ["--seed", "x"], "--seed")],
    SNLI / "benchmark_step.py": [(["--steps", "0"], "--steps"), (["--rounds", "0"], "--rounds")],
    SNLI / "heatmap.py": [(["c.pt", "--data", "b", "--out", "p.png", "--index", "-1"], "--index")],
    M30K / "text.py": [(M30K_PREPARE + ["--vocab-size", "0"], "--vocab-size"),
                       (M30K_PREPARE + ["--max-train", "-1"], "--max-train"),
                       (M30K_PREPARE + ["--max-eval", "-1"], "--max-eval")],
    M30K / "analyze.py": [(["sparsity", "--data-bin", "b", "--path", "c.pt", "--limit", "-1"], "--limit"),
                          (["heatmap", "--data-bin", "b", "--path", "c.pt", "--out", "p", "--beam", "0"], "--beam")],
    BENCH / "attention_speed.py": [(["--threads", "0"], "--threads"), (["--batch", "0"], "--batch"),
                                   (["--embed-dim", "0"], "--embed-dim"), (["--repeats", "0"], "--repeats/--rounds"),
                                   (["--lengths", "0"], "--lengths")],
}


def _main(entry):
    if entry == "rationale":
        from hardkuma_attention.cli import main
        return main
    if entry == "explain":
        from hardkuma_attention.cli import explain_main
        return explain_main
    if entry.name in ("benchmark_step.py", "heatmap.py", "analyze.py"):
        pytest.importorskip("fairseq")
    spec = importlib.util.spec_from_file_location(f"_cli_{entry.parent.name}_{entry.stem}", entry)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("entry", list(TABLE), ids=lambda e: e if isinstance(e, str) else f"{e.parent.name}/{e.name}")
def test_bad_flags_exit_2_naming_the_flag(entry, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main = _main(entry)
    for argv, flag in TABLE[entry]:
        with pytest.raises(SystemExit) as exc:
            rc = main(argv)
            raise SystemExit(rc)
        err = capsys.readouterr().err.strip()
        last = err.splitlines()[-1] if err else ""
        assert exc.value.code == 2 and f"{flag}: " in last and "Traceback" not in err, (argv, exc.value.code, err)
    assert not any(tmp_path.iterdir())  # nothing written


def test_each_entry_point_as_a_user_runs_it(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    rows = [([PY, "-m", "hardkuma_attention.rationale"] + TRAIN + ["--epochs", "0"], "--epochs"),
            ([PY, "-m", "hardkuma_attention.explain"] + MASK + ["--batch-size", "0"], "--batch-size"),
            ([PY, str(SNLI / "prepare_data.py")] + PREPARE + ["--max-examples", "train=-1"], "--max-examples"),
            ([PY, str(M30K / "text.py")] + M30K_PREPARE + ["--vocab-size", "0"], "--vocab-size"),
            ([PY, str(BENCH / "attention_speed.py"), "--threads", "0"], "--threads")]
    if shutil.which("hardkuma-rationale"):
        rows.append(([shutil.which("hardkuma-rationale")] + TRAIN + ["--gate", "sparsemax"], "--gate"))
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd, _ in rows]
    failures = []
    for (cmd, flag), proc in zip(rows, procs):
        _, err = proc.communicate(timeout=300)
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if proc.returncode != 2 or "Traceback" in err or f"{flag}: " not in last:
            failures.append(f"{' '.join(cmd[1:])}: rc={proc.returncode}, last line {last!r}")
    assert not failures, "\n".join(failures)
    assert not any(tmp_path.iterdir())  # nothing written
