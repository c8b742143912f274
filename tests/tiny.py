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
