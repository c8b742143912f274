"""Tasks: parity (SPEC §3), grammars (SPEC §4) and natural-language text (SPEC §5)."""

from pathlib import Path

from .base import IGNORE, Batch, Task
from .parity import ParityTask

__all__ = ["IGNORE", "Batch", "Task", "ParityTask", "build_task"]


def build_task(cfg, data_seed: int = 0, device: str = "cpu", folder: str | Path | None = None) -> Task:
    """The task described by a validated task config, with its training data drawn from `data_seed`.

    `folder`: a run folder holding the files the task derived from its inputs (`Task.artifacts`), reused
    instead of derived again (a text task's tokenizer.json)."""
    args = cfg.model_dump()
    name = args.pop("name")
    if name == "parity":
        return ParityTask(**args, data_seed=data_seed, device=device)
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
