"""A tiny parity recipe shared by the suites that run the CLI many times (hostile inputs, kill and resume)."""


def parity_tiny(teacher_steps: int = 20, checkpoint_every: int = 10, two_shot_checkpoint: int = 10) -> str:
    """The recipe's YAML text: d=8, k=2, width-8 MLPs, a few steps of SGD (seconds to run)."""
    return f"""\
name: tiny
device: cpu
threads: 1
workers: 1
task: {{name: parity, d: 8, k: 2, eval_size: 64}}
teacher:
  model: {{type: mlp, width: 8}}
  steps: {teacher_steps}
  batch_size: 8
  optim: {{name: sgd, lr: 0.05}}
  eval_every: 10
  checkpoint_every: {checkpoint_every}
phases: {{metric: accuracy}}
probe:
  monomials: {{samples: 1000, off_support: 3}}
students:
  model: {{type: mlp, width: 8}}
  steps: [20]
  batch_size: 8
  optim: {{name: sgd, lr: 0.05}}
  eval_every: 10
  kd: {{alpha: 0.0, tau: 0.0}}
  seeds: [0]
  methods: [ce, one-shot, {{name: two-shot, checkpoint: {two_shot_checkpoint}, switch: 10}}]
report: {{target: 0.9}}
"""


def parity_workers(name: str = "tiny-executors", teacher_steps: int = 600, eval_every: int = 25,
                   checkpoint_every: int = 50, seeds: str = "[0, 1]", methods: str = "[ce, auto]",
                   workers: int | None = None) -> str:
    """A parity recipe a little larger than `parity_tiny` (d=12, k=2, teacher width 64, students width
    16, the monomial probe): enough checkpoints and students to spread over worker processes."""
    return f"""\
name: {name}
threads: 1
{f"workers: {workers}" if workers else ""}
task: {{name: parity, d: 12, k: 2, eval_size: 256}}
teacher:
  model: {{type: mlp, width: 64}}
  steps: {teacher_steps}
  batch_size: 16
  optim: {{lr: 0.1}}
  eval_every: {eval_every}
  checkpoint_every: {checkpoint_every}
phases: {{metric: accuracy}}
probe: {{monomials: {{samples: 2000, off_support: 5}}}}
students:
  model: {{type: mlp, width: 16}}
  steps: 150
  batch_size: 16
  optim: {{lr: 0.1}}
  eval_every: 25
  seeds: {seeds}
  methods: {methods}
report: {{target: 0.9}}
"""
