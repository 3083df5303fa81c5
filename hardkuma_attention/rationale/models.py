r"""Select-then-predict rationale models (Bastings, Aziz & Titov 2019; Lei, Barzilay & Jaakkola 2016).

A *selector* reads the embedded text ``x`` (``(B, T, E)``) and gives one gate ``z_t`` per token;
a *classifier* sees only ``x_t * z_t`` and predicts the label.  Gates (``gate=``):

- ``"hardkuma"``: ``z_t ~ HardKuma(a_t, b_t)`` with ``a_t = gate_config.shape(s^a_t)`` (likewise ``b``;
  :class:`~hardkuma_attention.config.GateConfig`, preset ``"rationale"``: the sigmoid map on [0.1, 10]),
  reparameterised samples in training and ``HardKuma.deterministic()`` at eval (core
  :class:`~hardkuma_attention.HardKumaraswamy`; no copy of its math here);
- ``"bernoulli"``: ``z_t ~ Bernoulli(sigmoid(s_t))`` trained with REINFORCE (Lei et al. 2016),
  ``z_t = 1[p_t >= 1/2]`` at eval (or, with ``bernoulli_decode_rate``, the top
  ``ceil(rate * n)`` tokens by ``p_t``: the same rate as a HardKuma model, for comparisons);
- ``"none"``: the full-text baseline, ``z_t = 1`` on every valid token.

Selectors: ``"independent"`` (a, b from a bi-LSTM state ``h_t``, gates independent given x) and
``"dependent"`` (autoregressive: an LSTM cell over ``[h_t; z_{t-1}]`` gives ``s_t`` and
``(a_t, b_t) = f([h_t; s_t])``, so ``z_t`` depends on ``z_{<t}``).

Encoders (``encoder=``): ``"lstm"`` (bi-LSTM, default) or ``"cnn"`` (:class:`CNNEncoder`, masked
1-D convolutions, ~27x less CPU time per update on whole ERASER Movies reviews; see
benchmarks/rationale_encoder_speed.py); the selector and the classifier each get their own.

The classifier *skips zeroed tokens*: tokens with ``z_t = 0`` are removed (the remaining
``x_t z_t`` are packed to the left, order kept) before its bi-LSTM runs, so a zero gate removes the
token rather than feeding a zero vector; its prediction is the output layer on the final states.

Shapes: ``tokens`` ``(B, T)`` long, ``mask`` ``(B, T)`` bool (True = real token); all gate
tensors ``(B, T)`` and exactly 0 on padding.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..config import GateConfig
from ..distributions import HardKumaraswamy

__all__ = [
    "ModelConfig",
    "RationaleOutput",
    "LSTMEncoder",
    "CNNEncoder",
    "make_encoder",
    "ENCODERS",
    "POOLINGS",
    "compact_selected",
    "nest_old_fields",
    "Classifier",
    "IndependentSelector",
    "DependentSelector",
    "BernoulliSelector",
    "RationaleModel",
    "top_fraction",
    "GATES",
    "SELECTORS",
]

GATES = ("hardkuma", "bernoulli", "none")
SELECTORS = ("independent", "dependent")
ENCODERS = ("lstm", "cnn")
POOLINGS = ("final", "max")


def _rationale_gate() -> GateConfig:
    return GateConfig.preset("rationale")


# ModelConfig fields before GateConfig (model.pt / results.json written then): -> gate_config.
_OLD_GATE_FIELDS = {"support": "support", "ab_clamp": "ab_range", "ab_map": "ab_map"}
# The dependent selector's LSTM-cell size (a former ModelConfig field no run changed).
DEPENDENT_HIDDEN = 30


@dataclass
class ModelConfig:
    """Architecture.  ``num_outputs`` = number of classes, or 1 with ``task="regression"``.

    ``gate_config``: how the HardKuma selector's scores become gates (support, the a/b map and its
    range; :class:`~hardkuma_attention.config.GateConfig`, default its ``"rationale"`` preset:
    ``a = exp(log 0.1 + log(100) sigmoid(s))``, 1 at ``s = 0``, no flat zone).
    """

    vocab_size: int
    embed_dim: int = 50
    hidden_size: int = 150
    num_outputs: int = 5
    task: str = "classification"  # or "regression" (sigmoid output in [0, 1], MSE loss)
    gate: str = "hardkuma"
    selector: str = "independent"
    dropout: float = 0.5
    freeze_embeddings: bool = True
    skip_zeros: bool = True
    gate_config: GateConfig = field(default_factory=_rationale_gate)
    pooling: str = "final"  # classifier summary: "final" bi-LSTM states or "max" over time
    bernoulli_decode_rate: Optional[float] = None  # eval: top ceil(rate * n) tokens instead of p >= 1/2
    encoder: str = "lstm"  # selector and classifier encoder: "lstm" (bi-LSTM) | "cnn" (faster on long documents)
    cnn_kernel: int = 5  # encoder="cnn": width of each convolution (odd)
    cnn_layers: int = 2  # encoder="cnn": number of convolution layers
    selector_dilation: int = 1  # encoder="cnn": the selector's layer l (from 0) has dilation d**l (classifier: 1)

    def __post_init__(self):
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {SELECTORS}, got {self.selector!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.cnn_kernel < 1 or self.cnn_kernel % 2 == 0 or self.cnn_layers < 1:
            raise ValueError(f"cnn_kernel (--cnn-kernel) must be odd and >= 1 and cnn_layers (--cnn-layers) >= 1, "
                             f"got {self.cnn_kernel}, {self.cnn_layers}")
        if self.selector_dilation < 1 or (self.selector_dilation != 1 and self.encoder != "cnn"):
            raise ValueError(f"--selector-dilation (selector_dilation) must be >= 1, and 1 unless --encoder cnn, "
                             f"got {self.selector_dilation} with --encoder {self.encoder}")
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {self.task!r}")
        if isinstance(self.gate_config, dict):
            self.gate_config = GateConfig(**self.gate_config)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "ModelConfig":
        """The config saved as ``dataclasses.asdict`` (``model.pt``, ``results.json``), also in
        the shape written before :class:`~hardkuma_attention.config.GateConfig` (flat ``support``,
        ``ab_clamp``, ``ab_map``; missing ones took the "rationale" preset's values)."""
        return cls(**nest_old_fields(values, "gate_config", GateConfig.preset("rationale"), _OLD_GATE_FIELDS,
                                     {"dependent_hidden": DEPENDENT_HIDDEN}))


def nest_old_fields(values: Dict[str, Any], name: str, base, renamed: Dict[str, str],
                    removed: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of the saved config ``values`` whose flat fields ``renamed`` (old name -> field of the
    nested config ``base``) become ``values[name] = replace(base, ...)``; the ``removed`` fields are
    dropped where they hold the constant that replaced them (else ``ValueError``)."""
    values = dict(values)
    for old, constant in removed.items():
        if values.pop(old, constant) != constant:
            raise ValueError(f"{old} other than {constant} is no longer supported")
    old = {new: values.pop(field) for field, new in renamed.items() if field in values}
    if old:
        values[name] = dataclasses.replace(base, **old)
    return values


@dataclass
class RationaleOutput:
    """What :meth:`RationaleModel.forward` returns.

    ``logits``: ``(B, C)`` (regression: ``(B,)`` in [0, 1]); ``z``: gates ``(B, T)``;
    ``dist``: the HardKuma over the gates (``gate="hardkuma"``); ``select_logits``: Bernoulli
    logits ``(B, T)`` (``gate="bernoulli"``); ``log_prob_z``: ``(B,)`` sum over valid tokens of
    ``log p(z_t)`` for REINFORCE (``gate="bernoulli"``, training); ``scores``: the independent
    HardKuma selector's raw scores ``(B, T, 2)`` before the a/b map (``ObjectiveConfig.score_penalty``).
    """

    logits: torch.Tensor
    z: torch.Tensor
    mask: torch.Tensor
    dist: Optional[HardKumaraswamy] = None
    select_logits: Optional[torch.Tensor] = None
    log_prob_z: Optional[torch.Tensor] = None
    scores: Optional[torch.Tensor] = None


class LSTMEncoder(nn.Module):
    """Bidirectional LSTM over packed sequences.  ``(B, T, E)`` -> outputs ``(B, T, 2H)``
    (zeros on padding) and final states ``(B, 2H)`` (forward last, backward first)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_size = 2 * hidden_size

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        lengths_cpu = lengths.clamp_min(1).to("cpu")
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        final = torch.cat([h[0], h[1]], dim=-1)
        return out, final


class CNNEncoder(nn.Module):
    r"""Stacked 1-D convolutions, a drop-in for :class:`LSTMEncoder` on long documents.

    ``h^0 = x``, ``h^l_t = relu(sum_{j=-k..k} W_{l,j} h^{l-1}_{t + j d^{l-1}} + b_l) * m_t`` for
    ``l = 1..L`` (width ``kernel = 2k + 1``, dilation ``d^{l-1}`` with ``d = dilation``, "same" zero
    padding, ``m`` the valid-position mask, so padding never leaks into a valid position); outputs
    ``h^L`` ``(B, T, 2H)`` and final states ``max_t h^L_t`` over the valid positions ``(B, 2H)``
    (zeros for an empty row).  Receptive field ``1 + (kernel - 1) (1 + d + ... + d^{L-1})`` tokens
    (``L (kernel - 1) + 1`` undilated; kernel 5, 2 layers, ``d = 4``: 21), without gaps while
    ``d <= kernel``; cost linear in ``T`` and parallel over time, the same for every ``d``.
    """

    def __init__(self, input_size: int, hidden_size: int, kernel: int = 5, layers: int = 2, dilation: int = 1):
        super().__init__()
        self.output_size = 2 * hidden_size
        sizes = [input_size] + [self.output_size] * layers
        dilations = [dilation ** n for n in range(layers)]
        self.convs = nn.ModuleList(nn.Conv1d(i, o, kernel, padding=(kernel // 2) * d, dilation=d)
                                   for i, o, d in zip(sizes, sizes[1:], dilations))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        valid = torch.arange(x.size(1), device=x.device).unsqueeze(0) < lengths.to(x.device).unsqueeze(1)
        m = valid.unsqueeze(1).to(x.dtype)  # (B, 1, T)
        h = x.transpose(1, 2) * m
        for conv in self.convs:
            h = torch.relu(conv(h)) * m
        out = h.transpose(1, 2)
        final = out.masked_fill(~valid.unsqueeze(-1), float("-inf")).max(1).values
        return out, torch.where(valid.any(1, keepdim=True), final, torch.zeros_like(final))


def make_encoder(kind: str, input_size: int, hidden_size: int, kernel: int = 5, layers: int = 2,
                 dilation: int = 1) -> nn.Module:
    """``"lstm"``: :class:`LSTMEncoder`; ``"cnn"``: :class:`CNNEncoder` (same interface)."""
    if kind == "cnn":
        return CNNEncoder(input_size, hidden_size, kernel, layers, dilation)
    return LSTMEncoder(input_size, hidden_size)


def compact_selected(x: torch.Tensor, keep: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Move the kept positions of each row to the front, order preserved.

    ``x`` ``(B, T, E)``, ``keep`` ``(B, T)`` bool -> ``(B, T', E)`` with ``T' = max kept`` (at least
    1) and lengths ``(B,)``.  Differentiable w.r.t. ``x`` (a gather).
    """
    lengths = keep.sum(1)
    # Stable sort puts kept positions (key 0) before dropped ones (key 1), keeping their order.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    width = max(int(lengths.max().item()) if lengths.numel() else 1, 1)
    order = order[:, :width]
    out = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.size(-1)))
    valid = torch.arange(width, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
    return out * valid.unsqueeze(-1).to(out.dtype), lengths


class Classifier(nn.Module):
    """Predict from ``x * z``: bi-LSTM final states (or, ``pooling="max"``, the max over time of its
    outputs; better on long documents) -> dropout -> linear.

    With ``skip_zeros`` the tokens whose gate is exactly 0 are removed first (see
    :func:`compact_selected`); a row with nothing selected sees one zero vector.
    """

    def __init__(self, embed_dim: int, hidden_size: int, num_outputs: int, dropout: float, skip_zeros: bool,
                 pooling: str = "final", encoder: Optional[nn.Module] = None):
        super().__init__()
        self.pooling = pooling
        self.encoder = encoder if encoder is not None else LSTMEncoder(embed_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(self.encoder.output_size, num_outputs)
        self.skip_zeros = skip_zeros

    def forward(self, emb: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = emb * z.unsqueeze(-1)
        if self.skip_zeros:
            x, lengths = compact_selected(x, (z != 0) & mask)
        else:
            lengths = mask.sum(1)
        states, final = self.encoder(x, lengths)
        if self.pooling == "max":
            valid = torch.arange(states.size(1), device=states.device).unsqueeze(0) < lengths.clamp_min(1).unsqueeze(1)
            final = states.masked_fill(~valid.unsqueeze(-1), float("-inf")).max(1).values
        return self.output(self.dropout(final))


class IndependentSelector(nn.Module):
    """Scores ``(s^a, s^b)`` per token from a bi-LSTM: ``(B, T, E)`` -> two ``(B, T)``."""

    def __init__(self, embed_dim: int, hidden_size: int, dropout: float, num_scores: int = 2,
                 encoder: Optional[nn.Module] = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else LSTMEncoder(embed_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.scores = nn.Linear(self.encoder.output_size, num_scores)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, _ = self.encoder(self.dropout(emb), mask.sum(1))
        return self.scores(self.dropout(h))  # (B, T, num_scores)


class DependentSelector(nn.Module):
    """Autoregressive HardKuma selector: ``s_t = LSTMCell([h_t; z_{t-1}], s_{t-1})``,
    ``(s^a_t, s^b_t) = W [h_t; s_t]``, ``z_t ~ HardKuma(a_t, b_t)`` (eval: deterministic value).

    Returns ``a, b, z`` each ``(B, T)``.  Runs a Python loop over ``T``: use it for short texts.
    """

    def __init__(self, embed_dim: int, hidden_size: int, z_hidden: int, dropout: float,
                 gate: Optional[GateConfig] = None, encoder: Optional[nn.Module] = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else LSTMEncoder(embed_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.cell = nn.LSTMCell(self.encoder.output_size + 1, z_hidden)
        self.scores = nn.Linear(self.encoder.output_size + z_hidden, 2)
        self.gate = gate if gate is not None else GateConfig.preset("rationale")

    def forward(self, emb: torch.Tensor, mask: torch.Tensor, sample: bool):
        h, _ = self.encoder(self.dropout(emb), mask.sum(1))
        h = self.dropout(h)
        bsz, length, _ = h.shape
        state = (h.new_zeros(bsz, self.cell.hidden_size), h.new_zeros(bsz, self.cell.hidden_size))
        z_prev = h.new_zeros(bsz, 1)
        a_list, b_list, z_list = [], [], []
        for t in range(length):
            state = self.cell(torch.cat([h[:, t], z_prev], dim=-1), state)
            s = self.scores(torch.cat([h[:, t], state[0]], dim=-1))
            a_t, b_t = self.gate.shape(s[:, 0]), self.gate.shape(s[:, 1])
            dist = HardKumaraswamy(a_t, b_t, support=self.gate.support)
            z_t = dist.rsample() if sample else dist.deterministic()
            z_t = z_t * mask[:, t].to(z_t.dtype)
            a_list.append(a_t), b_list.append(b_t), z_list.append(z_t)
            z_prev = z_t.unsqueeze(-1)
        return torch.stack(a_list, 1), torch.stack(b_list, 1), torch.stack(z_list, 1)


class BernoulliSelector(IndependentSelector):
    """One logit per token (Lei et al. 2016 generator, independent variant)."""

    def __init__(self, embed_dim: int, hidden_size: int, dropout: float, encoder: Optional[nn.Module] = None):
        super().__init__(embed_dim, hidden_size, dropout, num_scores=1, encoder=encoder)


def top_fraction(scores: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
    """Bool ``(B, T)``: the ``max(1, ceil(rate * n_i))`` highest-scoring valid tokens of each row."""
    n = mask.sum(1)
    k = torch.ceil(rate * n.to(torch.float32)).long().clamp(min=1)
    k = torch.minimum(k, n)
    order = scores.masked_fill(~mask, float("-inf")).argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.size(1), device=scores.device).expand_as(order))
    return (rank < k.unsqueeze(1)) & mask


class RationaleModel(nn.Module):
    """Embeddings -> selector -> gates ``z`` -> classifier on ``x * z``.  See the module docstring."""

    def __init__(self, config: ModelConfig, embeddings: Optional[torch.Tensor] = None):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=0)
        if embeddings is not None:
            if tuple(embeddings.shape) != (c.vocab_size, c.embed_dim):
                raise ValueError(
                    f"embeddings shape {tuple(embeddings.shape)} != (vocab_size, embed_dim) = "
                    f"{(c.vocab_size, c.embed_dim)}"
                )
            self.embed.weight.data.copy_(embeddings)
        self.embed.weight.requires_grad_(not c.freeze_embeddings)

        def enc(dilation=1):
            return make_encoder(c.encoder, c.embed_dim, c.hidden_size, c.cnn_kernel, c.cnn_layers, dilation)

        sd = c.selector_dilation  # the selector's encoder only

        if c.gate == "hardkuma":
            if c.selector == "dependent":
                self.selector = DependentSelector(c.embed_dim, c.hidden_size, DEPENDENT_HIDDEN, c.dropout,
                                                  c.gate_config, encoder=enc(sd))
            else:
                self.selector = IndependentSelector(c.embed_dim, c.hidden_size, c.dropout, encoder=enc(sd))
        elif c.gate == "bernoulli":
            self.selector = BernoulliSelector(c.embed_dim, c.hidden_size, c.dropout, encoder=enc(sd))
        else:
            self.selector = None
        self.classifier = Classifier(c.embed_dim, c.hidden_size, c.num_outputs, c.dropout, c.skip_zeros, c.pooling,
                                     encoder=enc())

    def finish_logits(self, out: torch.Tensor) -> torch.Tensor:
        """The model's output from the classifier's ``out`` ``(B, C)``: unchanged for
        classification (logits), ``sigmoid(out)`` squeezed to ``(B,)`` in ``(0, 1)`` for regression.
        Use it on :attr:`classifier` outputs computed outside :meth:`forward` (explanations)."""
        if self.config.task == "regression":
            return torch.sigmoid(out.squeeze(-1))
        return out

    def classify(self, tokens: torch.Tensor, mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Classifier output for given gates ``z`` ``(B, T)`` (e.g. a fixed 0/1 rationale mask for
        ERASER comprehensiveness / sufficiency)."""
        emb = self.embed(tokens)
        return self.finish_logits(self.classifier(emb, z.to(emb.dtype) * mask.to(emb.dtype), mask))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, open_gates: bool = False) -> RationaleOutput:
        """``open_gates``: the classifier sees ``z = 1`` on every valid token (returned as ``z``),
        while the HardKuma distribution is still computed for the constraints (the open warm-up,
        ``ObjectiveConfig.warmup_gates``); the task loss then sends no gradient to the selector."""
        c = self.config
        emb = self.embed(tokens)
        fmask = mask.to(emb.dtype)
        dist = select_logits = log_prob_z = scores = None
        if c.gate == "none":
            z = fmask
        elif c.gate == "hardkuma":
            if c.selector == "dependent":
                a, b, z = self.selector(emb, mask, sample=self.training)
            else:
                scores = self.selector(emb, mask)
                a, b = c.gate_config.shape(scores[..., 0]), c.gate_config.shape(scores[..., 1])
            dist = HardKumaraswamy(a, b, support=c.gate_config.support)
            if c.selector != "dependent":
                z = dist.rsample() if self.training else dist.deterministic()
            z = fmask if open_gates else z * fmask
        else:
            select_logits = self.selector(emb, mask).squeeze(-1)
            if self.training:
                with torch.no_grad():
                    z = torch.bernoulli(torch.sigmoid(select_logits)) * fmask
                log_p = -F.binary_cross_entropy_with_logits(select_logits, z, reduction="none")
                log_prob_z = (log_p * fmask).sum(1)
            elif c.bernoulli_decode_rate is not None:
                z = top_fraction(select_logits, mask, c.bernoulli_decode_rate).to(emb.dtype)
            else:
                z = (select_logits >= 0).to(emb.dtype) * fmask
        logits = self.finish_logits(self.classifier(emb, z, mask))
        return RationaleOutput(logits, z, mask, dist, select_logits, log_prob_z, scores)
