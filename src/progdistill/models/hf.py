"""Hugging Face `transformers` models as teachers and students (optional extra `[hf]`, transformers>=4.41).

A recipe names one as `model: {type: hf, class: AutoModelForMaskedLM | AutoModelForCausalLM |
AutoModelForSequenceClassification, config: {model_type: bert, ...}}` (built by
`AutoConfig.for_model`, initialised from the run's seed) or `path: DIR` (a `from_pretrained` folder,
read offline). The task's io fills in or checks the vocabulary size, the number of labels, the position
table and the padding id. `HFModel` wraps the model so that it takes the task's inputs (token ids, an
attention mask from the task's padding id, sign vectors x as tokens (1 - x) / 2) and returns logits, like
the built-in models. Its checkpoints hold `config.json` and `model.safetensors` under Hugging Face's key
names, so `from_pretrained` loads them.

`transformers` is imported only when one of these is used; without it `require_transformers` raises
`MissingExtraError`, one line naming the extra.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .outputs import logits_of

HF_CLASSES = {"AutoModelForMaskedLM": "lm", "AutoModelForCausalLM": "lm", "AutoModelForSequenceClassification": "classifier"}
EXTRA = 'pip install -e ".[hf]"'
MIN_VERSION = (4, 41)
_NOT_CONFIG = ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype", "_attn_implementation_autoset")


class MissingExtraError(ValueError):
    """`transformers` (the `[hf]` extra) is not installed, or is older than `MIN_VERSION`."""


def require_transformers() -> Any:
    """The `transformers` module; raises MissingExtraError (one line, naming the extra) without it."""
    try:
        import transformers
    except ImportError:
        raise MissingExtraError(f"Hugging Face models need the [hf] extra (transformers>=4.41, accelerate): {EXTRA}") \
            from None
    version = tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_VERSION:
        raise MissingExtraError(f"Hugging Face models need transformers>=4.41 (installed: {transformers.__version__}): "
                                f"{EXTRA}")
    return transformers


def is_hf_model(model: Any) -> bool:
    """Whether `model` is a bare `transformers.PreTrainedModel` (False if transformers was never imported)."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


class HFModel(nn.Module):
    """A `transformers` model that takes a task's inputs and returns logits.

    Inputs: token ids [B, T] (int64), or sign vectors [B, d] in {-1, +1} (float), fed as tokens (1 - x) / 2.
    The attention mask is `tokens != pad_id` (all ones without a padding id). Output: the model's logits,
    [B, T, V] for a language model, [B, C] for a sequence classifier.
    """

    def __init__(self, model: nn.Module, pad_id: int | None = None) -> None:
        super().__init__()
        self.hf, self.pad_id = model, pad_id
        if getattr(model.config, "use_cache", False):
            model.config.use_cache = False  # no key/value cache: every call sees whole sequences

    def _inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        tokens = ((1 - x) / 2).long() if x.is_floating_point() else x
        mask = None if self.pad_id is None else (tokens != self.pad_id).long()
        return {"input_ids": tokens, "attention_mask": mask}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.hf(**self._inputs(x)))

    def hidden_states(self, x: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states [B, T, hidden] (what the non-terminal probe reads)."""
        return self.hf(**self._inputs(x), output_hidden_states=True).hidden_states[-1]


def as_task_model(model: nn.Module, io: dict[str, Any]) -> nn.Module:
    """`model` itself, or, for a bare `transformers` model, the `HFModel` around it that takes the inputs
    of a task with model io `io` (its parameters are the same tensors: training it trains `model`)."""
    return HFModel(model, io.get("pad_id")) if is_hf_model(model) else model


def describe(model: HFModel) -> dict[str, Any]:
    """The resolved architecture of a wrapped `transformers` model (its class and config), from which
    `build` makes the same model; what a checkpoint's meta.json records."""
    config = {k: v for k, v in model.hf.config.to_dict().items() if k not in _NOT_CONFIG}
    return {"type": "hf", "class": type(model.hf).__name__, "config": config, "path": None, "pad_id": model.pad_id}


# --- configs --------------------------------------------------------------------------------
def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_config(path: str | Path, revision: str | None = None, cache_dir: str | None = None) -> Any:
    """The `PretrainedConfig` of a `from_pretrained` folder or hub repo (offline: the local cache only)."""
    transformers = require_transformers()
    try:
        return transformers.AutoConfig.from_pretrained(str(path), revision=revision, cache_dir=cache_dir,
                                                       local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: cannot read its config.json: {_first_line(e)}") from None


def config_from_dict(config: dict[str, Any]) -> Any:
    """`AutoConfig.for_model(**config)`; `config` needs a `model_type`."""
    transformers = require_transformers()
    args = {k: v for k, v in config.items() if k not in _NOT_CONFIG}
    model_type = args.pop("model_type", None)
    if not model_type:
        raise ValueError("config needs a model_type (bert, gpt2, ...: any Hugging Face model type)")
    try:
        return transformers.AutoConfig.for_model(model_type, **args)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"config: {_first_line(e)}") from None


def _positions(config: Any) -> int | None:
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) else None


def _num_labels(config: Any) -> int | None:
    return getattr(config, "num_labels", None)


def config_io(config: Any) -> dict[str, Any]:
    """What a task sees of a model config: vocab_size, positions (None: no position table), num_labels,
    pad_token_id."""
    return {"vocab_size": getattr(config, "vocab_size", None), "positions": _positions(config),
            "num_labels": _num_labels(config), "pad_token_id": getattr(config, "pad_token_id", None)}


def io_problems(model_class: str, fields: dict[str, Any], io: dict[str, Any], check_pad: bool = True) -> list[str]:
    """How a model of `model_class` with `config_io` fields fails a task's io (empty if it fits)."""
    kind = HF_CLASSES.get(model_class, "lm")
    need = ("seq_len", "vocab_size", "num_classes") if kind == "classifier" else ("seq_len", "vocab_size")
    if any(key not in io for key in need):
        return [f"a {model_class} does not fit this task's inputs ({', '.join(sorted(io))})"]
    problems = []
    vocab = fields.get("vocab_size")
    if vocab is None or (vocab < io["vocab_size"] if kind == "classifier" else vocab != io["vocab_size"]):
        problems.append(f"vocab_size {vocab} (the task needs {'at least ' if kind == 'classifier' else ''}"
                        f"{io['vocab_size']})")
    if fields.get("positions") is not None and fields["positions"] < io["seq_len"]:
        problems.append(f"max_position_embeddings {fields['positions']} (the task's sequences have {io['seq_len']} "
                        "positions)")
    if kind == "classifier" and fields.get("num_labels") != io["num_classes"]:
        problems.append(f"num_labels {fields.get('num_labels')} (the task has {io['num_classes']} classes)")
    if check_pad and io.get("pad_id") is not None and fields.get("pad_token_id") != io["pad_id"]:
        problems.append(f"pad_token_id {fields.get('pad_token_id')} (the task pads with {io['pad_id']})")
    return problems


def resolve(arch: dict[str, Any], io: dict[str, Any]) -> dict[str, Any]:
    """The resolved architecture of `{type: hf, class, config | path}` for a task with model io `io`.

    With `config`, the task's vocab_size, max_position_embeddings (>= the task's positions), num_labels
    (classifiers) and pad_token_id are filled in where absent and checked where given; token ids outside
    the vocabulary (GPT-2's default bos/eos) are unset. With `path`, the folder's config is checked.
    Raises MissingExtraError without transformers, ValueError (one line) for a config that does not fit.
    """
    model_class = arch.get("class")
    if model_class not in HF_CLASSES:
        raise ValueError(f"class {model_class!r}: choose one of {', '.join(HF_CLASSES)}")
    path, given = arch.get("path"), arch.get("config")
    if (path is None) == (given is None):
        raise ValueError("give exactly one of config (a dict for AutoConfig.for_model, with model_type) and path "
                         "(a from_pretrained folder)")
    kind = HF_CLASSES[model_class]
    unfit = io_problems(model_class, {}, io)
    if unfit and "does not fit" in unfit[0]:
        raise ValueError(unfit[0])
    resolved: dict[str, Any] = {"type": "hf", "class": model_class, "config": None, "path": path,
                                "pad_id": io.get("pad_id")}
    if path is not None:
        config = read_config(path)
        problems = io_problems(model_class, config_io(config), io, check_pad=False)
        if problems:
            raise ValueError(f"path {path}: its config does not fit the task: {'; '.join(problems)}")
        resolved["config"] = {k: v for k, v in config.to_dict().items() if k not in _NOT_CONFIG}
        return resolved
    config = config_from_dict(given)
    aliases = getattr(config, "attribute_map", {})
    filled: dict[str, Any] = {}

    def fill(name: str, value: Any) -> None:
        if name not in given and aliases.get(name) not in given:
            try:
                setattr(config, name, value)
            except (ValueError, TypeError) as e:
                raise ValueError(f"config: cannot set {name}={value!r}: {_first_line(e)}") from None
            filled[name] = value

    fill("vocab_size", io.get("vocab_size"))
    if _positions(config) is not None:
        fill("max_position_embeddings", max(io.get("seq_len", 0), 1))
    if kind == "classifier" and "num_classes" in io:
        fill("num_labels", io["num_classes"])
    pad = getattr(config, "pad_token_id", None)
    if io.get("pad_id") is not None:
        fill("pad_token_id", io["pad_id"])
    elif isinstance(pad, int) and 0 <= pad < io["vocab_size"]:
        fill("pad_token_id", None)  # every id is a real token here (parity): no embedding row frozen as padding
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not 0 <= value < config.vocab_size:
            fill(name, None)
    problems = io_problems(model_class, config_io(config), io)
    if problems:
        raise ValueError(f"config does not fit the task: {'; '.join(problems)}")
    resolved["config"] = {**given, **filled}
    return resolved


def resolved_io_problems(resolved: dict[str, Any], io: dict[str, Any]) -> list[str]:
    """`io_problems` of a resolved architecture, read from its stored config (no transformers needed)."""
    config = resolved.get("config") or {}
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    labels = config.get("num_labels", len(config["id2label"]) if isinstance(config.get("id2label"), dict) else None)
    fields = {"vocab_size": config.get("vocab_size"), "positions": positions, "num_labels": labels,
              "pad_token_id": config.get("pad_token_id")}
    return io_problems(resolved.get("class", ""), fields, io, check_pad=resolved.get("path") is None)


# --- models and their weights ---------------------------------------------------------------
def build(resolved: dict[str, Any], weights: bool = True) -> HFModel:
    """The model of a resolved architecture: from its config (initialised from torch's global RNG) or,
    with a path and `weights`, loaded from it with `from_pretrained` (offline), in float32."""
    transformers = require_transformers()
    cls = getattr(transformers, resolved["class"])
    if resolved.get("path") and weights:
        model = load_pretrained(cls, resolved["path"])
    else:
        model = _from_config(cls, config_from_dict(resolved["config"]))
    return HFModel(model.float(), resolved.get("pad_id"))


def _from_config(cls: Any, config: Any) -> nn.Module:
    """A randomly initialised model of `cls` (an Auto class or a model class) with `config`."""
    return cls.from_config(config) if hasattr(cls, "from_config") else cls._from_config(config)


def load_pretrained(cls: Any, source: str | Path, revision: str | None = None, cache_dir: str | None = None,
                    folder: str | Path | None = None) -> nn.Module:
    """A `transformers` model read offline, in float32, eval mode: `cls.from_pretrained(source, revision=...,
    local_files_only=True)` from its safetensors (a folder, or a repo in the local hub cache whose snapshot is
    `folder`). A folder that has only a `pytorch_model.bin` is read with `torch.load(weights_only=True)`
    (tensors only, no code) into a model built from its config.json. Raises ValueError (one line)."""
    folder = Path(folder if folder is not None else source)
    name = f"{source}{'@' + revision if revision else ''}"
    safetensors = any((folder / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json"))
    try:
        if not safetensors and (folder / "pytorch_model.bin").is_file():
            model = _from_config(cls, read_config(folder))
            try:
                state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
            except Exception as e:  # weights_only refuses any pickle that is not plain tensors
                raise ValueError(f"{folder / 'pytorch_model.bin'}: refused: not a plain-tensor checkpoint (read with "
                                 f"weights_only=True: {_first_line(e)})") from None
            load_hf_state_dict(model, state, str(folder / "pytorch_model.bin"))
        else:
            bars = require_transformers().utils.logging
            shown = bars.is_progress_bar_enabled()
            bars.disable_progress_bar()  # one bar per teacher checkpoint load would flood the output
            try:
                model = cls.from_pretrained(str(source), revision=revision, cache_dir=cache_dir, local_files_only=True,
                                            use_safetensors=True)
            finally:
                if shown:
                    bars.enable_progress_bar()
    except (OSError, KeyError, RuntimeError) as e:
        raise ValueError(f"{name}: cannot load it: {_first_line(e)}") from None
    return model.float().eval()


def _aliases(model: nn.Module) -> dict[str, list[str]]:
    """Each state-dict name -> every name of the same tensor (tied weights share one), first name first."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {name: group for group in names.values() for name in group}


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The `transformers` model's state dict under its own key names, each tied tensor once (under its
    first name, as `save_pretrained` writes it)."""
    aliases = _aliases(model)
    return {name: t for name, t in model.state_dict().items() if name not in aliases or aliases[name][0] == name}


def load_hf_state_dict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a state dict written by `hf_state_dict` (tied tensors may appear under one name only).
    Raises ValueError naming `where` if keys are missing (other than tied ones), unexpected, or of the
    wrong shape."""
    aliases = _aliases(model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not any(a in state for a in aliases.get(k, []))]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})" for k in state
             if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing ({', '.join(missing[:3])})" if missing else "",
                 f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})" if unexpected else "",
                 f"wrong shapes: {', '.join(wrong[:3])}" if wrong else ""]
        raise ValueError(f"{where}: weights do not match the model: {'; '.join(p for p in parts if p)}")
    model.load_state_dict(state, strict=False)


def config_json(model: HFModel) -> str:
    """The model's config.json text, as `save_pretrained` writes it."""
    return model.hf.config.to_json_string()


def expected_shapes(model_class: str, config: Any) -> tuple[dict[str, tuple[int, ...]], dict[str, list[str]]]:
    """The state-dict shapes of a model of `model_class` with `config` (built on the meta device, no
    memory) and the aliases of its tied tensors."""
    transformers = require_transformers()
    with torch.device("meta"):
        model = _from_config(getattr(transformers, model_class), config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, _aliases(model)


def config_text(path: str | Path) -> dict[str, Any]:
    """A config.json as a dict (ValueError naming the file if it is not JSON)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable config.json: {_first_line(e)}") from None
