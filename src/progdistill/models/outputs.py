"""The one place where a model's output becomes logits.

Built-in models return a logits tensor. Hugging Face models return a `ModelOutput` (or a tuple with
`return_dict=False`); other code may return a dict. The trainer, the teacher's outputs, evaluation and the
probes all read logits through `logits_of`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, its `.logits` attribute (a `transformers`
    `ModelOutput`), its "logits" entry (a mapping), or the first element of a tuple or list.

    Shapes are the model's: [N, C] for a classifier, [N, T, V] for a language model. Raises TypeError
    for an output that holds no logits tensor.
    """
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"cannot read logits from a model output of type {type(output).__name__}: return a tensor, "
                        "an object with a .logits tensor, or a tuple whose first element is the logits")
    return logits
