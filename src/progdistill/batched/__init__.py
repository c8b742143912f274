"""Many models of one architecture trained as one batched model (`group.train_group` uses these).

- `stack`: every model's parameters as views [G, *shape] of one flat buffer [G, P].
- `models`: stacked forward passes (batched matmuls, one attention call over all sequences).
- `optim`: SGD / Adam / AdamW with a learning rate and a state per model, as torch.optim gives each alone.
- `loss`: the distillation loss of every model, each over its own loss positions.
"""

from .loss import stacked_distillation_loss, stacked_distillation_terms
from .models import StackedForward, stacked_forward
from .optim import StackedOptimizer
from .stack import Stack

__all__ = ["Stack", "StackedForward", "StackedOptimizer", "stacked_distillation_loss", "stacked_distillation_terms", "stacked_forward"]
