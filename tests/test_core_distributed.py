"""LagrangianConstraint under torch.distributed: two gloo processes share one multiplier.

Each rank feeds different local statistics (rank 1 often has no data); after many steps the
multiplier and moving average must be bit-identical on both ranks and equal to one process fed
the pooled statistics.  Workers run under ``torch.multiprocessing.spawn`` with a 60 s collective
timeout, so a rank that skipped a collective fails the test instead of hanging it.
"""
import datetime
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hardkuma_attention import LagrangianConstraint

STEPS = 200
KW = dict(alpha=0.9, lr=0.3, lambda_init=0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_stats(rank: int, step: int):
    """Rank r's (sum of P(z != 0), cells) at ``step``; rank 1 has no cells every third step and
    neither rank has any at steps that are multiples of 7."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    cells = float(torch.randint(1, 500, (), generator=g))
    if step % 7 == 0 or (rank == 1 and step % 3 == 0):
        cells = 0.0
    rate = 0.2 + 0.7 * torch.rand((), generator=g).item() if rank == 0 else 0.05 * torch.rand((), generator=g).item()
    return torch.tensor(rate * cells, dtype=torch.float32), torch.tensor(cells)


def _state(c: LagrangianConstraint):
    return torch.stack([c.lagrange_multiplier, c.moving_average, c.num_updates.float()]).clone()


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        by_sums = LagrangianConstraint(0.3, **KW)
        by_forward = LagrangianConstraint(0.3, damping=0.5, **KW)
        assert by_sums.is_distributed()
        trace_sums, trace_fwd, values = [], [], []
        for step in range(STEPS):
            num, cells = _local_stats(rank, step)
            values.append(by_sums.update_from_sums(num, cells))
            # forward: a rank without cells still calls (count 0); its local mean must not count,
            # so give it a value far from the others.
            mean = num / cells if cells > 0 else torch.tensor(0.99)
            x = mean.clone().requires_grad_(True)
            by_forward(x, count=cells)
            trace_sums.append(_state(by_sums))
            trace_fwd.append(_state(by_forward))
        by_sums.eval()  # eval: no update and no collective (rank 0 alone must not block)
        if rank == 0:
            by_sums(torch.tensor(0.5))
        torch.save(
            {"sums": torch.stack(trace_sums), "fwd": torch.stack(trace_fwd), "values": torch.stack(values)},
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_ranks_bit_identical(traces):
    r0, r1 = traces
    for key in ("sums", "fwd", "values"):
        assert torch.equal(r0[key], r1[key]), key
    # the controller really moved, and steps without any cells were skipped
    assert r0["sums"][-1, 0].item() != KW["lambda_init"]
    n_empty = sum(1 for s in range(STEPS) if s % 7 == 0)
    assert r0["sums"][-1, 2].item() == STEPS - n_empty


def test_equals_one_process_fed_the_pooled_sums(traces):
    pooled = LagrangianConstraint(0.3, **KW)
    states, values = [], []
    for step in range(STEPS):
        (n0, c0), (n1, c1) = _local_stats(0, step), _local_stats(1, step)
        values.append(pooled.update_from_sums(n0 + n1, c0 + c1))
        states.append(_state(pooled))
    assert torch.equal(torch.stack(states), traces[0]["sums"])
    assert torch.equal(torch.stack(values), traces[0]["values"])


def test_forward_with_count_weights_ranks_by_cells_and_ignores_empty_ranks(traces):
    """forward(mean, count=n) equals one process fed the pooled mean (up to the rounding of
    mean * n); the value 0.99 of an empty rank never enters (it would change the result)."""
    pooled = LagrangianConstraint(0.3, damping=0.5, **KW)
    states = []
    for step in range(STEPS):
        (n0, c0), (n1, c1) = _local_stats(0, step), _local_stats(1, step)
        if c0 + c1 > 0:
            pooled(((n0 + n1) / (c0 + c1)).double().float())
        states.append(_state(pooled))
    torch.testing.assert_close(torch.stack(states), traces[0]["fwd"], rtol=1e-5, atol=1e-7)


def test_single_process_count_zero_skips_and_count_keeps_value_exact():
    a, b = LagrangianConstraint(0.3, **KW), LagrangianConstraint(0.3, **KW)
    assert not a.is_distributed()
    for v in (0.7, 0.2, 0.9):
        a(torch.tensor(v))
        b(torch.tensor(v), count=torch.tensor(37.0))
    assert torch.equal(_state(a), _state(b))
    before = _state(b)
    b(torch.tensor(0.5), count=0)
    assert torch.equal(_state(b), before)
    assert b.update_from_sums(0.0, 0.0).item() == 0.0 and torch.equal(_state(b), before)
    assert b.update_from_sums(3.0, 4.0).item() == 0.75 and int(b.num_updates) == 4
