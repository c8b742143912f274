"""Model zoo and the factory that builds a model from (architecture config, task io)."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from . import hf as _hf
from .convert import export_refusal
from .mlp import MLP
from .outputs import logits_of
from .transformer import BertMLM, GPTClassifier, GPTLM

_IO_KEYS = {
    "mlp": {"input_dim": "input_dim", "num_classes": "num_classes"},
    "gpt": {"seq_len": "seq_len", "num_classes": "num_classes", "vocab_size": "vocab_size"},
    "bert": {"seq_len": "seq_len", "vocab_size": "vocab_size", "pad_id": "pad_id"},
    "gpt-lm": {"seq_len": "seq_len", "vocab_size": "vocab_size", "pad_id": "pad_id"},
}
_CLASSES: dict[str, type[nn.Module]] = {"mlp": MLP, "gpt": GPTClassifier, "bert": BertMLM, "gpt-lm": GPTLM}
# Types whose io enters their config rather than constructor arguments: (resolve, io check, build).
_RESOLVED_BY = {"hf": (_hf.resolve, _hf.resolved_io_problems, _hf.build)}


def resolve_architecture(arch: dict[str, Any], io: dict[str, Any]) -> dict[str, Any]:
    """The full constructor arguments: the recipe's architecture plus what the task dictates."""
    kind = arch["type"]
    if kind in _RESOLVED_BY:
        return _RESOLVED_BY[kind][0](arch, io)
    if kind not in _CLASSES:
        raise ValueError(f"unknown model type {kind!r}; choose from {sorted(_CLASSES) + sorted(_RESOLVED_BY)}")
    resolved = dict(arch)
    for arg, key in _IO_KEYS[kind].items():
        if key not in io:
            raise ValueError(f"model type {kind!r} does not fit task inputs {sorted(io)}")
        resolved[arg] = io[key]
    return resolved


def io_mismatches(resolved: dict[str, Any], io: dict[str, Any]) -> list[str]:
    """How a resolved architecture fails to fit a task's inputs and outputs (empty if it fits; a
    longer position table than the task needs fits)."""
    kind = resolved.get("type")
    if kind in _RESOLVED_BY:
        return _RESOLVED_BY[kind][1](resolved, io)
    if kind not in _IO_KEYS:
        return [f"unknown model type {kind!r}"]
    if any(key not in io for key in _IO_KEYS[kind].values()):
        return [f"a {kind!r} model does not fit this task's inputs"]
    return [f"{arg} {resolved.get(arg)} (the task needs {io[key]})" for arg, key in _IO_KEYS[kind].items()
            if not (resolved.get(arg) >= io[key] if arg == "seq_len" else resolved.get(arg) == io[key])]


def build_model(resolved: dict[str, Any]) -> nn.Module:
    """Instantiate a model from resolved architecture arguments (see `resolve_architecture`)."""
    args = dict(resolved)
    if args["type"] in _RESOLVED_BY:
        return _RESOLVED_BY[args["type"]][2](resolved)
    return _CLASSES[args.pop("type")](**args)


def checkpoint_files(model: nn.Module, resolved: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str] | None, str]:
    """What a checkpoint folder holds for `model`: (weights, safetensors metadata, config.json text).

    A Hugging Face model: its own key names (tied tensors once) and config, so `from_pretrained` loads
    the folder. A built-in model: its state dict, and a config.json that makes `from_pretrained` fail
    loudly instead of loading a default model with every weight missing (its model_type and vocab_size
    say what the folder is and how to convert it).
    """
    if isinstance(model, _hf.HFModel):
        return _hf.hf_state_dict(model.hf), {"format": "pt"}, _hf.config_json(model)
    refusal = export_refusal(resolved)
    note = ("not a transformers checkpoint: a progdistill checkpoint; convert it with `progdistill export "
            "CHECKPOINT OUT_DIR`" if refusal is None else f"not a transformers checkpoint: a progdistill checkpoint "
            f"({refusal})")
    config = {"model_type": "progdistill-checkpoint (not a transformers model: see `progdistill export`)",
              "vocab_size": note, "progdistill": {"note": note, "model": resolved}}
    return model.state_dict(), None, json.dumps(config, indent=1) + "\n"


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load weights written by `checkpoint_files` into a model built from the same architecture.
    Raises ValueError (a Hugging Face model) or RuntimeError (a built-in one) if they do not match."""
    if isinstance(model, _hf.HFModel):
        _hf.load_hf_state_dict(model.hf, state, where)
    else:
        model.load_state_dict(state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MLP", "GPTClassifier", "BertMLM", "GPTLM", "build_model", "resolve_architecture", "io_mismatches",
           "count_parameters", "checkpoint_files", "load_weights", "logits_of"]
