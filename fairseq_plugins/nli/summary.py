"""The summary table of ``recipes/snli/run.sh`` from the files of a run directory (no training).

    python -m fairseq_plugins.nli.summary SNLI_WORK [--seed 1] [--max-epoch 12] [--hardkuma-args ARGS]

Reads, for ``softmax`` and ``hardkuma``: ``SNLI_WORK/<att>/eval.valid.txt`` (the line of
``evaluate.sh``), ``train.log`` (words/s: :mod:`fairseq_plugins.nli.parse_log`) and ``train.stats`` (``seconds=``
of the finished training invocations, ``parallel=1`` when both trained side by side; written by
``recipes/fairseq_runs.sh``); and the pair counts of ``SNLI_WORK/text/{train,valid}.label``.
Writes ``SNLI_WORK/summary.md`` (temp file, then rename) and prints it.  Reading only finished
files, it gives the same table every time it runs on the same directory (a rerun of ``run.sh``
that reuses the trained models prints the table of the first run).
"""
import argparse
import os
import re
import sys
from pathlib import Path

from .parse_log import overlap_wps, train_summary

ATTENTIONS = ("softmax", "hardkuma")


class SummaryError(Exception):
    pass


def _read_lines(path: Path):
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise SummaryError(f"{path}: missing (run recipes/snli/run.sh)") from None


def read_eval(path: Path) -> dict:
    """``{'accuracy': str, 'nonzero': str}`` of an ``evaluate.sh`` line."""
    text = "\n".join(_read_lines(path))
    found = dict(re.findall(r"\b(accuracy|nonzero)=(\S+)", text))
    if set(found) != {"accuracy", "nonzero"}:
        raise SummaryError(f"{path}: no 'accuracy=... nonzero=...' line")
    return found


def read_stats(path: Path) -> dict:
    """``key=value`` lines of ``train.stats`` (``{}`` for a run trained before it existed)."""
    if not path.is_file():
        return {}
    return dict(line.split("=", 1) for line in _read_lines(path) if "=" in line)


def summarise(work: Path, seed: str, max_epoch: str, hardkuma_args: str) -> str:
    logs, acc, nz, wps, seconds, parallel = {}, {}, {}, {}, {}, {}
    for att in ATTENTIONS:
        logs[att] = _read_lines(work / att / "train.log")
        try:
            wps[att] = f"{train_summary(logs[att])[0]:.0f}"
        except ValueError as e:
            raise SummaryError(f"{work / att / 'train.log'}: {e}") from None
        ev = read_eval(work / att / "eval.valid.txt")
        acc[att], nz[att] = ev["accuracy"], ev["nonzero"]
        stats = read_stats(work / att / "train.stats")
        seconds[att], parallel[att] = stats.get("seconds"), stats.get("parallel", "0") == "1"
    both = all(parallel.values())
    if both:  # speeds over the window where both trainings ran (same load for both)
        try:
            wa, wb, _ = overlap_wps(logs["softmax"], logs["hardkuma"])
            wps["softmax"], wps["hardkuma"] = f"{wa:.0f}", f"{wb:.0f}"
        except ValueError:
            pass
    if None in seconds.values():
        took = "an unrecorded time"
    else:
        took = f"{max(map(int, seconds.values())) if both else sum(map(int, seconds.values()))}s wall"
    ntrain = len(_read_lines(work / "text" / "train.label"))
    ndev = len(_read_lines(work / "text" / "valid.label"))
    ratio = float(wps["hardkuma"]) / float(wps["softmax"])
    lines = [
        f"Reduced training set: {ntrain} SNLI train pairs, evaluated on SNLI dev ({ndev} pairs); seed {seed}, "
        f"{max_epoch} epochs max; training took {took} (PARALLEL={1 if both else 0}); "
        f"HARDKUMA_ARGS='{hardkuma_args}'.",
        "",
        "| attention | dev accuracy (%) | non-zero attention cells (%) | training words/s (median of log "
        f"intervals{', both running' if both else ''}) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {att} | {acc[att]} | {nz[att]} | {wps[att]} |" for att in ATTENTIONS]
    lines += ["", f"words/s ratio hardkuma/softmax: {ratio:.2f}; heatmap: {work / 'heatmap.png'}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("work", help="SNLI_WORK of run.sh")
    p.add_argument("--seed", default="1")
    p.add_argument("--max-epoch", default="12")
    p.add_argument("--hardkuma-args", default="")
    args = p.parse_args(argv)
    work = Path(args.work)
    try:
        text = summarise(work, args.seed, args.max_epoch, args.hardkuma_args)
    except SummaryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tmp = work / "summary.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, work / "summary.md")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
