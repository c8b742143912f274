"""progdistill: progressive knowledge distillation from a teacher's checkpoint trajectory."""

__version__ = "0.1.0"

from .config import Recipe, RecipeError, load_recipe, recipe_names  # noqa: E402
from .experiment import train_student, train_teacher  # noqa: E402
from .pipeline import run_experiment  # noqa: E402
from .io import CheckpointError  # noqa: E402
from .losses import distillation_loss, kd_loss  # noqa: E402
from .models import build_model, resolve_architecture  # noqa: E402
from .schedule import make_schedule, progressive_checkpoint  # noqa: E402
from .tasks import IGNORE, Batch, DatasetTask, ParityTask, Task, TensorTask, build_task  # noqa: E402
from .trainer import KDConfig, OptimConfig, TrainConfig, train  # noqa: E402
from .trajectory import Trajectory, detect_phases, load_checkpoint, save_checkpoint  # noqa: E402

__all__ = [
    "__version__", "Recipe", "RecipeError", "load_recipe", "recipe_names", "run_experiment", "train_student",
    "train_teacher", "CheckpointError", "distillation_loss", "kd_loss", "build_model", "resolve_architecture",
    "make_schedule", "progressive_checkpoint", "IGNORE", "Batch", "Task", "ParityTask", "TensorTask", "DatasetTask",
    "build_task", "KDConfig", "OptimConfig", "TrainConfig", "train", "Trajectory", "detect_phases",
    "load_checkpoint", "save_checkpoint",
]
