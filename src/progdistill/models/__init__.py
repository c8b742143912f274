"""Model zoo and the factory that builds a model from (architecture config, task io)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .mlp import MLP
from .transformer import BertMLM, GPTClassifier, GPTLM

_IO_KEYS = {
    "mlp": {"input_dim": "input_dim", "num_classes": "num_classes"},
    "gpt": {"seq_len": "seq_len", "num_classes": "num_classes", "vocab_size": "vocab_size"},
    "bert": {"seq_len": "seq_len", "vocab_size": "vocab_size", "pad_id": "pad_id"},
    "gpt-lm": {"seq_len": "seq_len", "vocab_size": "vocab_size", "pad_id": "pad_id"},
}
_CLASSES: dict[str, type[nn.Module]] = {"mlp": MLP, "gpt": GPTClassifier, "bert": BertMLM, "gpt-lm": GPTLM}


def resolve_architecture(arch: dict[str, Any], io: dict[str, Any]) -> dict[str, Any]:
    """The full constructor arguments: the recipe's architecture plus what the task dictates."""
    kind = arch["type"]
    if kind not in _CLASSES:
        raise ValueError(f"unknown model type {kind!r}; choose from {sorted(_CLASSES)}")
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
    if kind not in _IO_KEYS:
        return [f"unknown model type {kind!r}"]
    if any(key not in io for key in _IO_KEYS[kind].values()):
        return [f"a {kind!r} model does not fit this task's inputs"]
    return [f"{arg} {resolved.get(arg)} (the task needs {io[key]})" for arg, key in _IO_KEYS[kind].items()
            if not (resolved.get(arg) >= io[key] if arg == "seq_len" else resolved.get(arg) == io[key])]


def build_model(resolved: dict[str, Any]) -> nn.Module:
    """Instantiate a model from resolved architecture arguments (see `resolve_architecture`)."""
    args = dict(resolved)
    return _CLASSES[args.pop("type")](**args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MLP", "GPTClassifier", "BertMLM", "GPTLM", "build_model", "resolve_architecture", "io_mismatches",
           "count_parameters"]
