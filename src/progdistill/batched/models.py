"""Stacked forward passes: G models of one architecture evaluated as one model on G batches.

`stacked_forward(model)` returns f(params, inputs) where `params` maps the model's parameter names to
stacked tensors [G, *shape] and `inputs` [G, B, ...] holds each model's batch; f returns logits
[G, B, ..., C], row g being what the model with params[g] gives on inputs[g]. The operations mirror
the single model's, batched: `nn.Linear` (addmm) becomes `baddbmm` over [G, N, in] x [G, in, out], the
attention is one `scaled_dot_product_attention` call over the G*B sequences, LayerNorm is normalised
once and given its per-model affine with `addcmul`. Architectures: `MLP`, `BertMLM`, `GPTLM`,
`GPTClassifier` without dropout; any other model gets None (it trains alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models import MLP, BertMLM, GPTClassifier, GPTLM

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StackedForward:
    """f(params, inputs) -> logits for stacked parameters; `key` identifies the architecture (models with
    equal keys and parameter shapes can be stacked)."""

    key: tuple
    fn: Callable[[Params, torch.Tensor], torch.Tensor]

    def __call__(self, params: Params, inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(params, inputs)


def stacked_forward(model: nn.Module) -> StackedForward | None:
    """The stacked forward of `model`'s architecture, or None if it has none (an unknown or subclassed
    model type, buffers, or dropout, whose random draws a batched model would not reproduce)."""
    if list(model.buffers()) or any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        return None
    if type(model) is MLP:
        return _mlp(model)
    if type(model) in (BertMLM, GPTLM, GPTClassifier):
        backbone = model.backbone
        if any(block.attn.dropout > 0 for block in backbone.blocks):
            return None
        return _transformer(model)
    return None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`nn.Linear` per model: x [G, ..., in], weight [G, out, in], bias [G, out] -> [G, ..., out]."""
    return _Linear.apply(x, weight, bias)


class _Linear(torch.autograd.Function):
    """x [G, ..., in] -> x @ weight^T + bias, per model (rows [G, N, in] inside). The backward computes what
    `nn.Linear`'s (addmm's) computes for one model, in its layout: grad @ weight for the input, grad^T @ x
    for the weight (a contiguous [G, out, in], as the parameter), the sum over rows for the bias. The
    output is a tensor of its own (not a view), which later in-place operations may modify."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        g, n = x.shape[0], x.shape[-1]
        rows = x.reshape(g, -1, n)
        ctx.save_for_backward(rows, weight)
        ctx.has_bias, ctx.shape = bias is not None, x.shape
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype  # as addmm's
        y = x.new_empty(*x.shape[:-1], weight.shape[1], dtype=dtype)
        out = y.view(g, rows.shape[1], weight.shape[1])
        if bias is None:
            torch.bmm(rows.to(dtype), weight.mT.to(dtype), out=out)
        else:
            torch.baddbmm(bias.unsqueeze(1).to(dtype), rows.to(dtype), weight.mT.to(dtype), out=out)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, weight = ctx.saved_tensors
        grad = grad.reshape(rows.shape[0], rows.shape[1], -1)
        dtype = grad.dtype  # under autocast the forward ran in bf16: so does the backward, as autocast's would
        dx = torch.bmm(grad, weight.to(dtype)).view(ctx.shape).to(rows.dtype) if ctx.needs_input_grad[0] else None
        dw = torch.bmm(grad.mT, rows.to(dtype)).to(weight.dtype) if ctx.needs_input_grad[1] else None
        db = grad.sum(1).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """`nn.LayerNorm` over the last dimension with a per-model affine: weight, bias [G, H]."""
    return _LayerNorm.apply(x, weight, bias, eps)


class _LayerNorm(torch.autograd.Function):
    """Forward: one normalisation of all rows, then each model's affine (the values of the fused kernel).
    Backward: the fused kernel's backward once per model, whose sums over rows for the weight and bias
    gradients a batched reduction would take in another order (other rounding)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        g, hidden = x.shape[0], x.shape[-1]
        ctx.dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):  # layer norm runs in fp32 under autocast too
            rows = x.reshape(g, -1, hidden).to(weight.dtype)
            normed, mean, rstd = torch.native_layer_norm(rows, [hidden], None, None, eps)
            out = torch.addcmul(bias.unsqueeze(1), normed, weight.unsqueeze(1)).view(x.shape)
        ctx.save_for_backward(rows, mean, rstd, weight, bias)
        ctx.shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, mean, rstd, weight, bias = ctx.saved_tensors
        grad = grad.reshape(rows.shape).to(rows.dtype)
        need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        dx, dw, db = torch.empty_like(rows), torch.empty_like(weight), torch.empty_like(bias)
        for i in range(len(rows)):
            torch.ops.aten.native_layer_norm_backward.out(grad[i], rows[i], [rows.shape[-1]], mean[i], rstd[i], weight[i],
                                                          bias[i], need, out0=dx[i], out1=dw[i], out2=db[i])
        return (dx.view(ctx.shape).to(ctx.dtype) if need[0] else None), (dw if need[1] else None), \
            (db if need[2] else None), None


def _mlp(model: MLP) -> StackedForward:
    ops: list[str | None] = []  # a Linear's parameter prefix, or None for a ReLU
    for name, module in model.net.named_children():
        if isinstance(module, nn.Linear):
            ops.append(f"net.{name}")
        elif isinstance(module, nn.ReLU):
            ops.append(None)
        else:
            raise TypeError(f"unexpected layer {type(module).__name__} in an MLP")

    def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(2).float()
        for prefix in ops:
            h = torch.relu_(h) if prefix is None else linear(h, params[f"{prefix}.weight"], params.get(f"{prefix}.bias"))
        return h

    return StackedForward(("mlp", tuple(ops)), forward)


def _transformer(model: nn.Module) -> StackedForward:
    backbone = model.backbone
    blocks = len(backbone.blocks)
    first = backbone.blocks[0]
    heads, causal, pre_ln = first.attn.heads, backbone.causal, first.pre_ln
    eps = backbone.ln.eps
    pad_id = getattr(model, "pad_id", None)
    classifier = isinstance(model, GPTClassifier)

    def attention(params: Params, p: str, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        g, b, t, c = h.shape
        q, k, v = linear(h, params[p + "qkv.weight"], params[p + "qkv.bias"]).view(
            g * b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return linear(y.transpose(1, 2).reshape(g, b, t, c), params[p + "out.weight"], params[p + "out.bias"])

    def mlp(params: Params, p: str, h: torch.Tensor) -> torch.Tensor:
        h = F.gelu(linear(h, params[p + "mlp.0.weight"], params[p + "mlp.0.bias"]))
        return linear(h, params[p + "mlp.2.weight"], params[p + "mlp.2.bias"])

    def ln(params: Params, name: str, h: torch.Tensor) -> torch.Tensor:
        return layer_norm(h, params[name + ".weight"], params[name + ".bias"], eps)

    def forward(params: Params, inputs: torch.Tensor) -> torch.Tensor:
        tokens = ((1 - inputs) / 2).long() if classifier and inputs.is_floating_point() else inputs
        g, b, t = tokens.shape
        tok = params["backbone.tok.weight"]  # [G, V, H]
        vocab, hidden = tok.shape[1:]
        offsets = torch.arange(g, device=tokens.device).view(g, 1, 1) * vocab
        h = F.embedding(tokens + offsets, tok.reshape(g * vocab, hidden))
        h = h + params["backbone.pos.weight"][:, :t].unsqueeze(1)
        mask = None
        if pad_id is not None:
            keep = tokens != pad_id
            if not bool(keep.all()):
                mask = keep.view(g * b, 1, 1, t)
                if causal:
                    mask = mask & torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        for i in range(blocks):
            p = f"backbone.blocks.{i}."
            if pre_ln:
                h = h + attention(params, p + "attn.", ln(params, p + "ln1", h), mask)
                h = h + mlp(params, p, ln(params, p + "ln2", h))
            else:
                h = ln(params, p + "ln1", h + attention(params, p + "attn.", h, mask))
                h = ln(params, p + "ln2", h + mlp(params, p, h))
        h = ln(params, "backbone.ln", h)
        if classifier:
            return linear(h[:, :, -1], params["head.weight"], params["head.bias"])
        # one matmul per model: the gradient of the tied weight sums over all positions, and a batched
        # matmul takes that sum in another order than the single model's (other rounding)
        rows = h.reshape(g, b * t, hidden)
        logits = torch.stack([r @ w.T for r, w in zip(rows.unbind(0), tok.unbind(0))]) + params["bias"].unsqueeze(1)
        return logits.view(g, b, t, vocab)

    key = ("classifier" if classifier else "lm", blocks, heads, causal, pre_ln, eps, pad_id)
    return StackedForward(key, forward)
