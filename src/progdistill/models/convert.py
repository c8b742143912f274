"""Weights of the built-in language models under `transformers` names, and back.

Pure functions on state dicts and plain config dicts (no `transformers` import), with one explicit key
list per architecture, in the manner of nanoGPT's `GPT.from_pretrained` and torchtune's
`convert_weights.py`:

- `gpt-lm` <-> `GPT2LMHeadModel` (Radford et al. 2019): pre-LN blocks, exact GELU
  (`activation_function: "gelu"`), output tied to the token embedding. GPT-2's `Conv1D` stores weights
  as [in, out], so every linear weight is transposed; the fused q/k/v projection keeps its q, k, v order.
  GPT-2's output layer has no bias and `gpt-lm`'s has one, b. It is folded into the final LayerNorm's
  bias: logits = (g*n + beta) E^T + b equal (g*n + beta + delta) E^T when E delta = b, which has an
  exact solution when E [V, H] has full row rank (so V <= H); delta is the least-squares solution in
  float64 and the export is refused if its residual is not at rounding level.
- `bert` with `layout: hf` <-> `BertForMaskedLM` (Devlin et al. 2019): post-LN blocks, LayerNorm on
  the embeddings, MLM head transform, tied decoder with its bias. The fused q/k/v weight is split into
  query, key and value; the token-type embedding is a single row of zeros.

What has no exact equivalent (the MLP, the GPT classifier, the default BERT layout) is refused by
`export_refusal` with a one-line reason.
"""

from __future__ import annotations

from typing import Any

import torch

_LN_EPS = 1e-5  # nn.LayerNorm's default, used by every built-in model

# (progdistill suffix, transformers suffix, transpose) per block.
_GPT2_BLOCK = [
    ("ln1.weight", "ln_1.weight", False), ("ln1.bias", "ln_1.bias", False),
    ("attn.qkv.weight", "attn.c_attn.weight", True), ("attn.qkv.bias", "attn.c_attn.bias", False),
    ("attn.out.weight", "attn.c_proj.weight", True), ("attn.out.bias", "attn.c_proj.bias", False),
    ("ln2.weight", "ln_2.weight", False), ("ln2.bias", "ln_2.bias", False),
    ("mlp.0.weight", "mlp.c_fc.weight", True), ("mlp.0.bias", "mlp.c_fc.bias", False),
    ("mlp.2.weight", "mlp.c_proj.weight", True), ("mlp.2.bias", "mlp.c_proj.bias", False),
]
_GPT2_OUTER = [
    ("backbone.tok.weight", "transformer.wte.weight"), ("backbone.pos.weight", "transformer.wpe.weight"),
    ("backbone.ln.weight", "transformer.ln_f.weight"), ("backbone.ln.bias", "transformer.ln_f.bias"),
]
_BERT_BLOCK = [
    ("attn.out.weight", "attention.output.dense.weight"), ("attn.out.bias", "attention.output.dense.bias"),
    ("ln1.weight", "attention.output.LayerNorm.weight"), ("ln1.bias", "attention.output.LayerNorm.bias"),
    ("mlp.0.weight", "intermediate.dense.weight"), ("mlp.0.bias", "intermediate.dense.bias"),
    ("mlp.2.weight", "output.dense.weight"), ("mlp.2.bias", "output.dense.bias"),
    ("ln2.weight", "output.LayerNorm.weight"), ("ln2.bias", "output.LayerNorm.bias"),
]
_BERT_QKV = ("query", "key", "value")
_BERT_OUTER = [
    ("backbone.tok.weight", "bert.embeddings.word_embeddings.weight"),
    ("backbone.pos.weight", "bert.embeddings.position_embeddings.weight"),
    ("backbone.ln.weight", "bert.embeddings.LayerNorm.weight"), ("backbone.ln.bias", "bert.embeddings.LayerNorm.bias"),
    ("head.0.weight", "cls.predictions.transform.dense.weight"), ("head.0.bias", "cls.predictions.transform.dense.bias"),
    ("head.2.weight", "cls.predictions.transform.LayerNorm.weight"),
    ("head.2.bias", "cls.predictions.transform.LayerNorm.bias"),
    ("bias", "cls.predictions.bias"),
]


class ConversionError(ValueError):
    """Weights that have no exact equivalent in the other format."""


def export_refusal(arch: dict[str, Any]) -> str | None:
    """Why a resolved architecture cannot be exported as a `transformers` model (None if it can)."""
    kind = arch.get("type")
    if kind in ("gpt-lm", "hf"):
        return None
    if kind == "bert":
        return None if arch.get("layout", "default") == "hf" else (
            "the default BERT layout (a LayerNorm after the last block, no MLM head transform) has no exact "
            "BertForMaskedLM equivalent; train it with model.layout: hf to export it")
    if kind == "mlp":
        return "an MLP has no transformers equivalent"
    if kind == "gpt":
        return "the GPT classifier (sign-vector inputs, a biased head on the last position) has no exact transformers export"
    return f"model type {kind!r} has no transformers export"


def _layers(arch: dict[str, Any]) -> tuple[int, int, int]:
    return arch["layers"], arch["heads"], arch["heads"] * arch["head_dim"]


def fold_output_bias(embedding: torch.Tensor, bias: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """delta [H] with embedding [V, H] @ delta = bias [V] (float64 least squares, min-norm).
    Raises ConversionError if no exact solution exists (V > H, or the embedding lacks full row rank)."""
    e, b = embedding.double(), bias.double()
    if not bool(b.any()):
        return torch.zeros(e.shape[1], dtype=embedding.dtype)
    delta = torch.linalg.pinv(e) @ b
    residual = float((e @ delta - b).abs().max())
    if residual > tol * max(1.0, float(b.abs().max())):
        raise ConversionError(f"the output bias cannot be folded into GPT-2's final LayerNorm (vocab {e.shape[0]}, "
                              f"hidden {e.shape[1]}: residual {residual:.2g}); GPT2LMHeadModel's output has no bias")
    return delta.to(embedding.dtype)


def gpt_lm_to_gpt2(state: dict[str, torch.Tensor], arch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json dict, `GPT2LMHeadModel` state dict) of a `gpt-lm` (resolved `arch`, `state`);
    the tied `lm_head.weight` is left out, as `save_pretrained` does. Raises ConversionError."""
    layers, heads, hidden = _layers(arch)
    out = {hf: state[ours] for ours, hf in _GPT2_OUTER}
    out["transformer.ln_f.bias"] = state["backbone.ln.bias"] + fold_output_bias(state["backbone.tok.weight"],
                                                                                 state["bias"])
    for i in range(layers):
        for ours, hf, transpose in _GPT2_BLOCK:
            w = state[f"backbone.blocks.{i}.{ours}"]
            out[f"transformer.h.{i}.{hf}"] = w.T.contiguous() if transpose else w
    dropout = arch.get("dropout", 0.0)
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": arch["vocab_size"],
        "n_positions": arch["seq_len"], "n_embd": hidden, "n_layer": layers, "n_head": heads, "n_inner": 4 * hidden,
        "activation_function": "gelu", "resid_pdrop": dropout, "embd_pdrop": 0.0, "attn_pdrop": dropout,
        "layer_norm_epsilon": _LN_EPS, "initializer_range": 0.02, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "tie_word_embeddings": True,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": arch.get("pad_id"), "use_cache": True,
    }
    return config, out


def gpt2_to_gpt_lm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(resolved `gpt-lm` architecture, state dict) of a `GPT2LMHeadModel` that has an exact `gpt-lm`
    equivalent (exact GELU, 4x MLP, tied output, LayerNorm eps 1e-5, plain attention scaling); the
    output bias is zero. Raises ConversionError otherwise."""
    hidden, heads = config["n_embd"], config["n_head"]
    checks = {"activation_function": "gelu", "layer_norm_epsilon": _LN_EPS, "tie_word_embeddings": True,
              "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False}
    wrong = [f"{k}={config.get(k, 'default')!r}" for k, v in checks.items() if config.get(k, v) != v]
    if config.get("n_inner") not in (None, 4 * hidden):
        wrong.append(f"n_inner={config['n_inner']}")
    if wrong:
        raise ConversionError(f"this GPT-2 has no exact gpt-lm equivalent ({', '.join(wrong)})")
    arch = {"type": "gpt-lm", "layers": config["n_layer"], "heads": heads, "head_dim": hidden // heads,
            "dropout": config.get("resid_pdrop", 0.0), "seq_len": config["n_positions"],
            "vocab_size": config["vocab_size"], "pad_id": config.get("pad_token_id")}
    out = {ours: state[hf] for ours, hf in _GPT2_OUTER}
    out["bias"] = torch.zeros(config["vocab_size"], dtype=out["backbone.tok.weight"].dtype)
    for i in range(arch["layers"]):
        for ours, hf, transpose in _GPT2_BLOCK:
            w = state[f"transformer.h.{i}.{hf}"]
            out[f"backbone.blocks.{i}.{ours}"] = w.T.contiguous() if transpose else w
    return arch, out


def bert_to_hf(state: dict[str, torch.Tensor], arch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json dict, `BertForMaskedLM` state dict) of a `bert` with `layout: hf`; the tied decoder
    weight and bias are left out, as `save_pretrained` does. Raises ConversionError for another layout."""
    if arch.get("layout", "default") != "hf":
        raise ConversionError(export_refusal(arch) or "not a layout: hf BERT")
    layers, heads, hidden = _layers(arch)
    out = {hf: state[ours] for ours, hf in _BERT_OUTER}
    out["bert.embeddings.token_type_embeddings.weight"] = torch.zeros(1, hidden, dtype=out["cls.predictions.bias"].dtype)
    for i in range(layers):
        ours, hf = f"backbone.blocks.{i}.", f"bert.encoder.layer.{i}."
        for part in ("weight", "bias"):
            for name, chunk in zip(_BERT_QKV, state[f"{ours}attn.qkv.{part}"].chunk(3, dim=0)):
                out[f"{hf}attention.self.{name}.{part}"] = chunk.contiguous()
        for a, b in _BERT_BLOCK:
            out[hf + b] = state[ours + a]
    dropout = arch.get("dropout", 0.0)
    config = {
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": arch["vocab_size"],
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": 4 * hidden, "hidden_act": "gelu", "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout, "max_position_embeddings": arch["seq_len"], "type_vocab_size": 1,
        "layer_norm_eps": _LN_EPS, "initializer_range": 0.02, "pad_token_id": arch.get("pad_id"),
        "position_embedding_type": "absolute", "tie_word_embeddings": True, "is_decoder": False,
    }
    return config, out


def hf_to_bert(state: dict[str, torch.Tensor], config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(resolved `bert` architecture with `layout: hf`, state dict) of a `BertForMaskedLM` that has an
    exact equivalent (exact GELU, 4x MLP, LayerNorm eps 1e-5, absolute positions; its token-type row 0
    is added to the position embeddings). Raises ConversionError otherwise."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    checks = {"hidden_act": "gelu", "layer_norm_eps": _LN_EPS, "intermediate_size": 4 * hidden,
              "position_embedding_type": "absolute", "tie_word_embeddings": True}
    wrong = [f"{k}={config.get(k, 'default')!r}" for k, v in checks.items() if config.get(k, v) != v]
    if wrong:
        raise ConversionError(f"this BERT has no exact bert (layout hf) equivalent ({', '.join(wrong)})")
    arch = {"type": "bert", "layers": config["num_hidden_layers"], "heads": heads, "head_dim": hidden // heads,
            "dropout": config.get("hidden_dropout_prob", 0.0), "layout": "hf",
            "seq_len": config["max_position_embeddings"], "vocab_size": config["vocab_size"],
            "pad_id": config.get("pad_token_id")}
    out = {ours: state[hf] for ours, hf in _BERT_OUTER}
    token_type = state.get("bert.embeddings.token_type_embeddings.weight")
    if token_type is not None:
        out["backbone.pos.weight"] = out["backbone.pos.weight"] + token_type[0]
    for i in range(arch["layers"]):
        ours, hf = f"backbone.blocks.{i}.", f"bert.encoder.layer.{i}."
        for part in ("weight", "bias"):
            out[f"{ours}attn.qkv.{part}"] = torch.cat([state[f"{hf}attention.self.{n}.{part}"] for n in _BERT_QKV])
        for a, b in _BERT_BLOCK:
            out[ours + a] = state[hf + b]
    return arch, out


def to_transformers(state: dict[str, torch.Tensor], arch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json dict, state dict) of a built-in model's `transformers` equivalent. Raises
    ConversionError (one line) for a model without one."""
    refusal = export_refusal(arch)
    if refusal is not None:
        raise ConversionError(refusal)
    if arch["type"] == "gpt-lm":
        return gpt_lm_to_gpt2(state, arch)
    if arch["type"] == "bert":
        return bert_to_hf(state, arch)
    raise ConversionError(f"model type {arch['type']!r} is already a transformers model")
