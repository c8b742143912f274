"""Tasks: parity (SPEC §3) and grammars (SPEC §4)."""

from .base import IGNORE, Batch, Task
from .parity import ParityTask

__all__ = ["IGNORE", "Batch", "Task", "ParityTask", "build_task"]


def build_task(cfg, data_seed: int = 0, device: str = "cpu") -> Task:
    """The task described by a validated task config, with its training data drawn from `data_seed`."""
    args = cfg.model_dump()
    name = args.pop("name")
    if name == "parity":
        return ParityTask(**args, data_seed=data_seed, device=device)
    from .pcfg import PCFGARTask, PCFGMLMTask, grammar_from_spec

    grammar = grammar_from_spec(**args.pop("grammar"))
    cls = {"pcfg-mlm": PCFGMLMTask, "pcfg-ar": PCFGARTask}[name]
    return cls(grammar, **args, data_seed=data_seed, device=device)
