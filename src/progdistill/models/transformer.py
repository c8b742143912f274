"""Small Transformers in plain torch.nn with scaled_dot_product_attention.

- `GPTClassifier`: causal decoder reading a sequence and classifying at the last position
  (parity: tokens (1 - x) / 2).
- `BertMLM`: post-LN bidirectional encoder with learned positions and a tied output layer; with
  `layout="hf"` it has Hugging Face BERT's layout (LayerNorm on the embeddings instead of after the last
  block, the MLM head transform dense + GELU + LayerNorm before the tied decoder), so that
  `progdistill export` writes it as a `BertForMaskedLM`.
- `GPTLM`: causal language model with a tied output layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, heads: int, head_dim: int, causal: bool, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = heads * head_dim
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mask`: boolean, broadcastable to [B, heads, T, T], True = may attend (causality included)."""
        b, t, c = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=self.causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Attention + 4x MLP; pre-LN (GPT) or post-LN (BERT)."""

    def __init__(self, heads: int, head_dim: int, causal: bool, pre_ln: bool, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = heads * head_dim
        self.pre_ln = pre_ln
        self.attn = SelfAttention(heads, head_dim, causal, dropout)
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_ln:
            h = h + self.drop(self.attn(self.ln1(h), mask))
            return h + self.drop(self.mlp(self.ln2(h)))
        h = self.ln1(h + self.drop(self.attn(h, mask)))
        return self.ln2(h + self.drop(self.mlp(h)))


class Backbone(nn.Module):
    """Token + learned position embeddings, a stack of blocks, a final LayerNorm (`embed_ln`: the
    LayerNorm, then dropout, on the embeddings instead, as BERT has it)."""

    def __init__(self, vocab_size: int, seq_len: int, layers: int, heads: int, head_dim: int,
                 causal: bool, pre_ln: bool, dropout: float = 0.0, embed_ln: bool = False) -> None:
        super().__init__()
        hidden = heads * head_dim
        self.causal, self.embed_ln = causal, embed_ln
        self.tok = nn.Embedding(vocab_size, hidden)
        self.pos = nn.Embedding(seq_len, hidden)
        self.blocks = nn.ModuleList(Block(heads, head_dim, causal, pre_ln, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout) if embed_ln else None
        self.apply(_init)

    def forward(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`key_mask` [B, T]: False at padding, which no position attends to."""
        t = tokens.shape[1]
        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :]
            if self.causal:
                mask = mask & torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        h = self.tok(tokens) + self.pos(torch.arange(t, device=tokens.device))
        if self.embed_ln:
            h = self.drop(self.ln(h))
        for block in self.blocks:
            h = block(h, mask)
        return h if self.embed_ln else self.ln(h)


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class GPTClassifier(nn.Module):
    """Causal Transformer over tokens (1 - x) / 2 of a sign vector; logits at the last position."""

    def __init__(self, seq_len: int, num_classes: int, layers: int = 2, heads: int = 4, head_dim: int = 8,
                 vocab_size: int = 2) -> None:
        super().__init__()
        self.backbone = Backbone(vocab_size, seq_len, layers, heads, head_dim, causal=True, pre_ln=True)
        self.head = nn.Linear(heads * head_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = ((1 - x) / 2).long() if x.is_floating_point() else x
        return self.head(self.backbone(tokens)[:, -1])


class _TiedLM(nn.Module):
    """Backbone + output layer tied to the token embedding; `pad_id` tokens are not attended to."""

    causal: bool
    pre_ln: bool

    def __init__(self, vocab_size: int, seq_len: int, layers: int, heads: int, head_dim: int,
                 pad_id: int | None = None, dropout: float = 0.0, embed_ln: bool = False) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.backbone = Backbone(vocab_size, seq_len, layers, heads, head_dim, self.causal, self.pre_ln, dropout,
                                 embed_ln)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states [B, T, hidden]."""
        key_mask = None if self.pad_id is None else tokens != self.pad_id
        if key_mask is not None and bool(key_mask.all()):
            key_mask = None
        return self.backbone(tokens, key_mask)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hidden_states(tokens) @ self.backbone.tok.weight.T + self.bias


class BertMLM(_TiedLM):
    """BERT-style post-LN encoder for masked language modelling.

    `layout="default"`: a final LayerNorm after the last block, logits = h @ E^T + b.
    `layout="hf"`: Hugging Face's `BertForMaskedLM` (Devlin et al. 2019): LayerNorm and dropout on the
    embeddings, none after the last block, logits = LN(GELU(h W^T + c)) @ E^T + b (E the token embedding).
    """

    causal, pre_ln = False, False

    def __init__(self, vocab_size: int, seq_len: int, layers: int, heads: int, head_dim: int,
                 pad_id: int | None = None, dropout: float = 0.0, layout: str = "default") -> None:
        if layout not in ("default", "hf"):
            raise ValueError(f"layout must be 'default' or 'hf', got {layout!r}")
        super().__init__(vocab_size, seq_len, layers, heads, head_dim, pad_id, dropout, embed_ln=layout == "hf")
        self.layout = layout
        if layout == "hf":
            hidden = heads * head_dim
            self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
            self.head.apply(_init)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.hidden_states(tokens)
        if self.layout == "hf":
            h = self.head(h)
        return h @ self.backbone.tok.weight.T + self.bias


class GPTLM(_TiedLM):
    """GPT-style pre-LN causal decoder for next-token prediction."""

    causal, pre_ln = True, True
