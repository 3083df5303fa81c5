"""benchmarks/attention_speed.py: flags, skips, workers and the table, on tiny sizes (no timing asserted)."""
import importlib.util
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "attention_speed.py"
spec = importlib.util.spec_from_file_location("attention_speed", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("argv, message", [
    (["--sweep", "--lengths", "100", "--tokens", "256"], "not a multiple of --lengths"),
    (["--variants", "nope"], "unknown"),
    (["--markdown"], "go with --sweep"),
    (["--sweep", "--variants", "hardkuma"], "needs the softmax variant"),
    (["--sweep", "--lengths", "0"], "must be >= 1"),
    (["--sweep", "--mode", "eval"], "--mode goes with the per-length mode"),
    (["--mode", "infer"], "--mode"),
])
def test_bad_flags_exit_2_with_the_flag_named(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_sweep_defaults_and_map_budget_skips():
    args = bench.parse_args(["--sweep"])
    assert args.lengths == [128, 256, 512, 1024, 2048, 4096, 8192] and args.tokens == 8192
    assert {"softmax", "hardkuma-default", "hardkuma", "entmax15", "sparsemax", "fairseq-hardkuma"} <= set(args.variants)
    keep, skipped = bench.sweep_variants(args, 8192, 1)  # one map: 8 heads x 8192^2 x 4 B = 2 GiB
    assert "softmax" in keep and "hardkuma" in keep
    assert "2048 MiB > --map-budget-mib 1024" in skipped["entmax15"] and "sparsemax" in skipped
    keep, skipped = bench.sweep_variants(args, 128, 64)  # 32 MiB
    assert "entmax15" not in skipped or "not installed" in skipped["entmax15"]


@pytest.mark.parametrize("name", ["softmax", "hardkuma-default", "hardkuma", "hardkuma-naive", "fairseq-hardkuma"])
def test_variants_run_sequence_first_and_workers_report(name):
    if name == "fairseq-hardkuma":
        pytest.importorskip("fairseq")
    job = {"T": 8, "B": 2, "E": 16, "H": 2, "rounds": 1, "variants": [name]}
    m, fn = bench.build(name, 16, 2, seq_first=True)
    assert fn(torch.randn(8, 2, 16)).shape == (8, 2, 16)
    mem = bench.worker_memory(job)[name]
    assert mem["saved"] > 0 and mem["rss_peak"] > 0 and mem["rss_step"] >= 0 and "errors" not in mem
    times = bench.worker_time(job)[name]
    assert set(times) == {"train", "eval"}


def test_naive_variant_is_the_same_attention_in_eval():
    torch.manual_seed(0)
    m, naive = bench.build("hardkuma-naive", 16, 2, seq_first=True)
    x = torch.randn(6, 3, 16) * 3
    m.eval()
    ref = m(x, x, x, need_weights=False)[0]
    assert torch.allclose(naive(x), ref, atol=1e-5)


def test_markdown_table_has_ratios_and_skips():
    settings = {"tokens": 256, "embed_dim": 16, "heads": 2, "threads": 2, "rounds": 3}
    rows = {"softmax": {"train": 0.010, "eval": 0.004, "saved": 2**20, "rss_peak": 2**29, "rss_step": 2**21},
            "hardkuma": {"train": 0.020, "eval": 0.006, "saved": 3 * 2**20, "rss_peak": 2**30, "rss_step": 2**22}}
    text = bench.markdown([{"T": 128, "B": 2, "rows": rows, "skipped": {"entmax15": "too big"}}], settings)
    lines = text.splitlines()
    assert "| 128 (2) | hardkuma | 20.0 | 2.00× | 6.0 | 1.50× | 3.0 | 3.00× | 1024.0 | 4.0 | 2.00× |" in lines
    assert any("entmax15 | skipped: too big" in ln for ln in lines)
    assert len({ln.count("|") for ln in lines if ln.startswith("|")}) == 1  # every row has every column


def test_a_variant_failing_its_memory_run_is_reported_and_left_out_of_the_timings(monkeypatch):
    jobs = []

    def fake_worker(job, threads):
        jobs.append(job)
        if job["kind"] == "memory":
            if job["variants"] == ["hardkuma"]:
                return {"error": "worker exited with -9: no output"}
            return {job["variants"][0]: {"saved": 1, "rss_peak": 2, "rss_step": 1}}
        return {name: {"train": 1.0, "eval": 1.0} for name in job["variants"]}

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    args = bench.parse_args(["--sweep", "--variants", "softmax", "hardkuma", "--tokens", "256", "--lengths", "128"])
    res = bench.sweep_length(args, 128)
    assert jobs[-1]["kind"] == "time" and jobs[-1]["variants"] == ["softmax"]
    assert "exited with -9" in res["skipped"]["hardkuma"] and list(res["rows"]) == ["softmax"]
    assert res["rows"]["softmax"] == {"saved": 1, "rss_peak": 2, "rss_step": 1, "train": 1.0, "eval": 1.0}


def test_per_length_eval_mode_prints_eval_times(capsys):
    bench.main(["--lengths", "8", "--batch", "2", "--repeats", "1", "--threads", "1", "--mode", "eval",
                "--variants", "softmax", "hardkuma"])
    out = capsys.readouterr().out
    assert "eval step" in out and "eval ms" in out and "hardkuma" in out
