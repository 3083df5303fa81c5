r"""fairseq model ``decomposable_attention`` (Parikh et al., 2016) with softmax or HardKuma attention.

Forward pass, for premise ``p`` (B, P) and hypothesis ``h`` (B, H) word ids::

    p~ = W e(p),  h~ = W e(h)                     embed (optionally frozen GloVe) + linear projection -> D
    [NULL] prepended to both (a learned vector, unless --no-null-token)
    attend:    beta (B, P, D), alpha (B, H, D)   see fairseq_plugins/nli/attend.py
    compare:   v1_i = G([p~_i; beta_i]),  v2_j = G([h~_j; alpha_j])    (G: 2-layer ReLU MLP, D hidden)
    aggregate: y = Linear(H([sum_i v1_i; sum_j v2_j])) (B, num_classes)   (sums over real words only)

``forward`` returns ``(logits, extra)`` with ``extra`` holding the alignment (``attn``: (B, P', H')
matrix, P' = P + 1 with the NULL token first), ``premise_mask`` (B, P') and ``hypothesis_mask``
(B, H').  Architectures: ``decomposable_attention`` (softmax) and ``decomposable_attention_hardkuma``.
"""

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from torch import nn

from hardkuma_attention.config import DEFAULT_AB_RANGE, GateConfig
from hardkuma_attention.distributions import DEFAULT_SUPPORT

from .attend import FeedForward, HardKumaAttend, SoftmaxAttend
from .embeddings import pretrained_embedding_matrix

logger = logging.getLogger(__name__)

ATTENTIONS = ChoiceEnum(["softmax", "hardkuma"])
NORMALIZATIONS = ChoiceEnum(["none", "sum", "softmax"])


@dataclass
class DecomposableAttentionConfig(FairseqDataclass):
    attention: ATTENTIONS = field(default="softmax", metadata={"help": "attend step: softmax or hardkuma"})
    attention_normalize: NORMALIZATIONS = field(
        default="none",
        metadata={"help": "HardKuma gates normalisation: none (paper), sum, softmax (see hardkuma_attention)"},
    )
    embed_dim: int = field(default=300, metadata={"help": "word embedding size (= the pretrained vectors' size)"})
    hidden_dim: int = field(default=200, metadata={"help": "size of projections and MLPs"})
    dropout: float = field(default=0.2, metadata={"help": "dropout before each MLP layer"})
    no_null_token: bool = field(default=False, metadata={"help": "do not prepend a NULL token to each sentence"})
    embeddings_path: Optional[str] = field(
        default=None, metadata={"help": "GloVe-format text file (.gz ok) of pretrained word vectors"}
    )
    train_embeddings: bool = field(
        default=False, metadata={"help": "fine-tune pretrained embeddings (default: frozen, as Parikh et al.)"}
    )
    hardkuma_attend_mlp: ChoiceEnum(["separate", "shared"]) = field(
        default="separate",
        metadata={"help": "F_a, F_b: two separate 2-layer MLPs (paper) or a shared first layer (cheaper)"},
    )
    hardkuma_support: str = field(default=f"{DEFAULT_SUPPORT[0]:g},{DEFAULT_SUPPORT[1]:g}", metadata={"help": "HardKuma stretch interval l,r"})
    hardkuma_ab_clamp: str = field(default=f"{DEFAULT_AB_RANGE[0]:g},{DEFAULT_AB_RANGE[1]:g}", metadata={"help": "bounds of a and b: min,max"})


def _pair(text: str, name: str):
    try:
        lo, hi = (float(x) for x in str(text).split(","))
    except ValueError:
        raise ValueError(f"--{name.replace('_', '-')} expects two comma-separated numbers, got {text!r}") from None
    return lo, hi


def gate_from_cfg(cfg: DecomposableAttentionConfig) -> GateConfig:
    """The :class:`~hardkuma_attention.config.GateConfig` of ``--attention-normalize``,
    ``--hardkuma-support`` and ``--hardkuma-ab-clamp``."""
    return GateConfig.preset(
        "attention", normalize=str(cfg.attention_normalize), support=_pair(cfg.hardkuma_support, "hardkuma_support"),
        ab_range=_pair(cfg.hardkuma_ab_clamp, "hardkuma_ab_clamp"),
    )


@register_model("decomposable_attention", dataclass=DecomposableAttentionConfig)
class DecomposableAttentionModel(BaseFairseqModel):
    def __init__(self, cfg: DecomposableAttentionConfig, embed_tokens: nn.Embedding, num_classes: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.padding_idx = embed_tokens.padding_idx
        self.embed_tokens = embed_tokens
        self.project = nn.Linear(embed_tokens.embedding_dim, d, bias=False)
        self.null = None if cfg.no_null_token else nn.Parameter(torch.randn(d) * d**-0.5)
        if cfg.attention == "hardkuma":
            self.attend = HardKumaAttend(d, d, cfg.dropout, gate=gate_from_cfg(cfg), mlp=str(cfg.hardkuma_attend_mlp))
        else:
            self.attend = SoftmaxAttend(d, d, cfg.dropout)
        self.compare = FeedForward(2 * d, d, cfg.dropout)
        self.aggregate = FeedForward(2 * d, d, cfg.dropout)
        self.classifier = nn.Linear(d, num_classes)

    @classmethod
    def build_model(cls, cfg: DecomposableAttentionConfig, task):
        dictionary = task.source_dictionary
        embed = nn.Embedding(len(dictionary), cfg.embed_dim, padding_idx=dictionary.pad())
        if cfg.embeddings_path:
            weight = pretrained_embedding_matrix(cfg.embeddings_path, dictionary.symbols, dictionary.pad(), cfg.embed_dim)
            embed.weight.data.copy_(weight)
            embed.weight.requires_grad_(bool(cfg.train_embeddings))
        else:
            nn.init.normal_(embed.weight, std=cfg.embed_dim**-0.5)
            nn.init.zeros_(embed.weight[dictionary.pad()])
        return cls(cfg, embed, task.cfg.num_classes)

    def _encode(self, tokens: torch.Tensor):
        """(B, T) ids -> (B, T', D) projected embeddings and (B, T') bool mask, NULL first if on."""
        x = self.project(self.embed_tokens(tokens))
        mask = tokens.ne(self.padding_idx)
        if self.null is not None:
            B = tokens.size(0)
            x = torch.cat([self.null.to(x.dtype).expand(B, 1, -1), x], dim=1)
            mask = torch.cat([mask.new_ones(B, 1), mask], dim=1)
        return x, mask

    def forward(self, premise, hypothesis, premise_lengths=None, hypothesis_lengths=None, **unused):
        p, p_mask = self._encode(premise)
        h, h_mask = self._encode(hypothesis)
        cell_mask = p_mask.unsqueeze(2) & h_mask.unsqueeze(1)  # (B, P, H)
        align = self.attend(p, h, cell_mask)
        beta = torch.bmm(align.to_hypothesis, h)  # (B, P, D)
        alpha = torch.bmm(align.to_premise, p)  # (B, H, D)
        # G over the words of both sentences in one call (concatenated along time).
        compared = self.compare(torch.cat([torch.cat([p, beta], -1), torch.cat([h, alpha], -1)], dim=1))
        compared = compared * torch.cat([p_mask, h_mask], dim=1).unsqueeze(-1).to(compared.dtype)
        v1, v2 = compared[:, : p.size(1)], compared[:, p.size(1):]
        logits = self.classifier(self.aggregate(torch.cat([v1.sum(1), v2.sum(1)], dim=-1)))
        return logits, {"attn": align.matrix, "premise_mask": p_mask, "hypothesis_mask": h_mask}

    def max_positions(self):
        return None


def decomposable_attention(args):
    """Defaults of the ``decomposable_attention`` architecture (registered with the model itself)."""
    args.attention = getattr(args, "attention", "softmax")
    args.hidden_dim = getattr(args, "hidden_dim", 200)
    args.dropout = getattr(args, "dropout", 0.2)


@register_model_architecture("decomposable_attention", "decomposable_attention_hardkuma")
def decomposable_attention_hardkuma(args):
    args.attention = getattr(args, "attention", "hardkuma")
    args.attention_normalize = getattr(args, "attention_normalize", "none")
    decomposable_attention(args)
