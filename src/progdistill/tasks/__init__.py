"""Tasks: parity (SPEC §3), grammars (SPEC §4), natural-language text (SPEC §5), your own tensors or
dataset, or a Task imported by path."""

from pathlib import Path
from typing import Any

from .base import IGNORE, Batch, Task
from .data import DatasetTask, TensorTask
from .parity import ParityTask

__all__ = ["IGNORE", "Batch", "Task", "ParityTask", "TensorTask", "DatasetTask", "build_task"]


def build_task(cfg: Any, data_seed: int = 0, device: str = "cpu", folder: str | Path | None = None) -> Task:
    """The task described by a task config (a recipe's `task` section, or the same as a dict, checked
    exactly as in a recipe), with its training data drawn from `data_seed`.

    `folder`: a run folder holding the files the task derived from its inputs (`Task.artifacts`), reused
    instead of derived again (a text task's tokenizer.json).
    Raises RecipeError (a ValueError) naming the bad key of a dict, ValueError for a task that cannot be
    built (a missing grammar or tensor file, a factory that returns no Task, ...)."""
    from ..config import TASK, ImportedTaskConfig, validate_section
    from ..plugins import PluginError, import_object

    cfg = validate_section(TASK, cfg, "task")
    args = cfg.model_dump()
    name = args.pop("name")
    if isinstance(cfg, ImportedTaskConfig):
        task = import_object(name)(**args, data_seed=data_seed, device=device)
        if not isinstance(task, Task):
            raise PluginError(f"{name} returned a {type(task).__name__}, not a progdistill Task")
        return task
    if name == "parity":
        return ParityTask(**args, data_seed=data_seed, device=device)
    if name == "tensors":
        return TensorTask.from_file(args.pop("path"), **args, data_seed=data_seed, device=device)
    if name == "text-mlm":
        from .text import TextMLMTask

        saved = Path(folder) / "tokenizer.json" if folder is not None else None
        tokenizer = None
        if saved is not None and saved.is_file():
            from ..text.tokenizer import load_tokenizer

            tokenizer = saved.read_text(encoding="utf-8")
            load_tokenizer(tokenizer, str(saved))  # a damaged file is reported with its path
        return TextMLMTask(**args, data_seed=data_seed, device=device, tokenizer=tokenizer)
    from .pcfg import PCFGARTask, PCFGMLMTask, grammar_from_spec

    grammar = grammar_from_spec(**args.pop("grammar"))
    cls = {"pcfg-mlm": PCFGMLMTask, "pcfg-ar": PCFGARTask}[name]
    return cls(grammar, **args, data_seed=data_seed, device=device)
