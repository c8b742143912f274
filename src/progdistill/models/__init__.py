"""Model zoo and the factory that builds a model from (architecture config, task io).

An architecture is a dict with a `type` and constructor keywords. `model_type(type)` is the one place
that maps a type to what resolves, checks and builds it: a built-in name (`mlp`, `gpt`, `bert`,
`gpt-lm`) or an import path `package.module:Class` of the user's own `nn.Module` (or a function that
returns one). The resolved architecture, with the task's inputs and outputs filled in, is what
checkpoints record in meta.json, so `load_checkpoint` rebuilds either kind.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from ..plugins import PluginError, check_keywords, check_kind, import_object, is_import_path, keyword_parameters
from .mlp import MLP
from .transformer import BertMLM, GPTClassifier, GPTLM

_IO_KEYS = {
    "mlp": {"input_dim": "input_dim", "num_classes": "num_classes"},
    "gpt": {"seq_len": "seq_len", "num_classes": "num_classes", "vocab_size": "vocab_size"},
    "bert": {"seq_len": "seq_len", "vocab_size": "vocab_size", "pad_id": "pad_id"},
    "gpt-lm": {"seq_len": "seq_len", "vocab_size": "vocab_size", "pad_id": "pad_id"},
}
_CLASSES: dict[str, type[nn.Module]] = {"mlp": MLP, "gpt": GPTClassifier, "bert": BertMLM, "gpt-lm": GPTLM}

# Names of a task's `model_io()` that a recipe need not set for a model imported by path: when a
# constructor requires one of them, the task supplies it (checked again, with the task's real values,
# before a run starts).
STANDARD_IO = ("input_dim", "num_classes", "seq_len", "vocab_size", "pad_id")


class ModelType(Protocol):
    """What a model `type` needs: fill in the task's io, check a resolved architecture against a task,
    and build the module."""

    def resolve(self, arch: dict[str, Any], io: dict[str, Any]) -> dict[str, Any]: ...

    def mismatches(self, resolved: dict[str, Any], io: dict[str, Any]) -> list[str]: ...

    def build(self, resolved: dict[str, Any]) -> nn.Module: ...


def _fits(arg: str, value: Any, needed: Any) -> bool:
    """A longer position table than the task needs fits; every other io value must be equal."""
    if arg == "seq_len":
        return isinstance(value, int) and value >= needed
    return value == needed


class BuiltinModel:
    """One of the package's own architectures; the task dictates the io keywords."""

    def __init__(self, kind: str) -> None:
        self.kind, self.cls, self.io_keys = kind, _CLASSES[kind], _IO_KEYS[kind]

    def resolve(self, arch: dict[str, Any], io: dict[str, Any]) -> dict[str, Any]:
        resolved = dict(arch)
        for arg, key in self.io_keys.items():
            if key not in io:
                raise ValueError(f"model type {self.kind!r} does not fit task inputs {sorted(io)}")
            resolved[arg] = io[key]
        return resolved

    def mismatches(self, resolved: dict[str, Any], io: dict[str, Any]) -> list[str]:
        if any(key not in io for key in self.io_keys.values()):
            return [f"a {self.kind!r} model does not fit this task's inputs"]
        return [f"{arg} {resolved.get(arg)} (the task needs {io[key]})" for arg, key in self.io_keys.items()
                if not _fits(arg, resolved.get(arg), io[key])]

    def build(self, resolved: dict[str, Any]) -> nn.Module:
        args = dict(resolved)
        args.pop("type")
        return self.cls(**args)


class ImportedModel:
    """A user's `nn.Module` class (or a function returning one) named by `package.module:Class`.

    Keywords come from the architecture dict; the task's `model_io()` values fill in the constructor's
    parameters of the same names that the architecture does not set.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def _target(self) -> Any:
        obj = import_object(self.path)
        check_kind(obj, self.path, nn.Module, "torch.nn.Module")
        return obj

    def resolve(self, arch: dict[str, Any], io: dict[str, Any]) -> dict[str, Any]:
        obj = self._target()
        named, _ = keyword_parameters(obj)
        resolved = dict(arch)
        for name in named:
            if name not in resolved and name in io:
                resolved[name] = io[name]
        keywords = {k: v for k, v in resolved.items() if k != "type"}
        try:
            check_keywords(obj, self.path, keywords)
        except PluginError as e:
            raise PluginError(f"{e} (the task's model_io supplies: {', '.join(sorted(io)) or 'nothing'})") from None
        wrong = self.mismatches(resolved, io)
        if wrong:
            raise PluginError(f"{self.path}: keywords that do not fit the task: {'; '.join(wrong)}")
        return resolved

    def mismatches(self, resolved: dict[str, Any], io: dict[str, Any]) -> list[str]:
        return [f"{key} {resolved[key]} (the task needs {io[key]})" for key in sorted(io)
                if key != "type" and key in resolved and not _fits(key, resolved[key], io[key])]

    def build(self, resolved: dict[str, Any]) -> nn.Module:
        obj = self._target()
        keywords = {k: v for k, v in resolved.items() if k != "type"}
        check_keywords(obj, self.path, keywords)
        model = obj(**keywords)
        if not isinstance(model, nn.Module):
            raise PluginError(f"{self.path} returned a {type(model).__name__}, not a torch.nn.Module")
        return model


_TYPES: dict[str, ModelType] = {kind: BuiltinModel(kind) for kind in _CLASSES}


def model_type(kind: Any) -> ModelType:
    """What resolves, checks and builds models of `kind`: a built-in type or an import path.

    Raises ValueError for an unknown name."""
    if isinstance(kind, str) and kind in _TYPES:
        return _TYPES[kind]
    if is_import_path(kind):
        return ImportedModel(kind)
    raise ValueError(f"unknown model type {kind!r}; choose from {sorted(_TYPES)} or an import path "
                     "'package.module:Class'")


def resolve_architecture(arch: dict[str, Any], io: dict[str, Any]) -> dict[str, Any]:
    """The full constructor arguments: the architecture (`type` + keywords, checked as a recipe's `model`
    section, defaults filled in) plus what the task dictates (`io`, a task's `model_io()`).
    Raises RecipeError (a ValueError) naming a bad key, ValueError if the model cannot fit the task."""
    from ..config import MODEL, validate_section

    arch = validate_section(MODEL, arch, "model").model_dump()
    return model_type(arch.get("type")).resolve(arch, io)


def io_mismatches(resolved: dict[str, Any], io: dict[str, Any]) -> list[str]:
    """How a resolved architecture fails to fit a task's inputs and outputs (empty if it fits; a
    longer position table than the task needs fits)."""
    try:
        kind = model_type(resolved.get("type"))
    except ValueError:
        return [f"unknown model type {resolved.get('type')!r}"]
    return kind.mismatches(resolved, io)


def build_model(resolved: dict[str, Any]) -> nn.Module:
    """Instantiate a model from resolved architecture arguments (see `resolve_architecture`).
    Raises ValueError (PluginError for an import path that fails) if it cannot be built."""
    return model_type(resolved.get("type")).build(resolved)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MLP", "GPTClassifier", "BertMLM", "GPTLM", "ModelType", "model_type", "build_model",
           "resolve_architecture", "io_mismatches", "count_parameters", "STANDARD_IO"]
