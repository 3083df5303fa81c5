"""Learning test: the label is the symbol of the one flagged key among N; a model with one
HardKumaAttention query and the L0 constraint at target 0.1 must solve it with sparse attention."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hardkuma_attention import HardKumaAttention, LagrangianConstraint

N_KEYS, N_SYMBOLS, DIM = 10, 10, 32


class OneKeyModel(nn.Module):
    def __init__(self, parameterization):
        super().__init__()
        self.symbol = nn.Embedding(N_SYMBOLS, DIM)
        self.flag = nn.Embedding(2, DIM)
        self.position = nn.Parameter(torch.randn(N_KEYS, DIM) * 0.1)
        self.query = nn.Parameter(torch.randn(1, 1, DIM))
        self.attention = HardKumaAttention(DIM, 2, batch_first=True, parameterization=parameterization)
        self.classify = nn.Linear(DIM, N_SYMBOLS)

    def forward(self, symbols, flags):
        keys = self.symbol(symbols) + self.flag(flags) + self.position  # (B, N, D)
        query = self.query.expand(keys.size(0), 1, DIM)
        out, weights, stats = self.attention(query, keys, keys, average_attn_weights=False, return_stats=True)
        return self.classify(out[:, 0]), weights, stats


def batch(size, generator):
    symbols = torch.randint(0, N_SYMBOLS, (size, N_KEYS), generator=generator)
    flagged = torch.randint(0, N_KEYS, (size,), generator=generator)
    flags = F.one_hot(flagged, N_KEYS).long()
    return symbols, flags, flagged, symbols[torch.arange(size), flagged]


@pytest.fixture
def one_thread():
    # a tiny model: one thread is fastest, and avoids oversubscribing a loaded machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("parameterization", ["split", "separate"])
def test_constraint_reaches_target_and_task_is_solved(parameterization, one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = OneKeyModel(parameterization)
    constraint = LagrangianConstraint(0.1, lr=0.1, lambda_init=0.01)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3000):  # about 6 s on one idle core
        symbols, flags, _, labels = batch(64, g)
        logits, _, stats = model(symbols, flags)
        loss = F.cross_entropy(logits, labels) + constraint(stats.expected_l0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    constraint.eval()
    with torch.no_grad():
        symbols, flags, flagged, labels = batch(4000, g)
        logits, weights, stats = model(symbols, flags)
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    nonzero = stats.nonzero_rate.item()
    # Attention goes to the right key: most open cells sit on the flagged key.  (The model may leave
    # every gate shut for one symbol and let the output bias predict it, so "flagged key always
    # open" is not required.)
    open_cells = weights[:, :, 0] > 0  # (B, H, N)
    on_flagged = open_cells[torch.arange(4000), :, flagged].sum().item() / max(open_cells.sum().item(), 1)
    print(f"{parameterization}: accuracy {accuracy:.4f}, non-zero rate {nonzero:.4f}, on flagged {on_flagged:.4f}")
    assert accuracy >= 0.95
    assert nonzero <= 0.15
    assert on_flagged >= 0.9
