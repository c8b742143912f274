"""Check that a teacher exported to transformers behaves as the native one (needs the [hf] extra).

    python scripts/hf_equivalence.py logits RUN/teacher EXPORTED [--sequences 64]
        max |logits(progdistill) - logits(from_pretrained)| on the first 64 held-out sequences of RUN's task,
        for every checkpoint of the trajectory and its exported checkpoint-N folder;
    python scripts/hf_equivalence.py compare RUN OTHER_RUN
        the detected phases of both runs and, for every student in both, the difference of final accuracies.

The full check on a shipped recipe (docs/huggingface.md, "Equivalence"):

    progdistill teacher pcfg-ar-small --out runs/ar threads=1 workers=1
    progdistill export runs/ar/teacher runs/ar-exported
    python scripts/hf_equivalence.py logits runs/ar/teacher runs/ar-exported
    progdistill run pcfg-ar-small --out runs/ar threads=1 workers=1
    progdistill run pcfg-ar-small --out runs/ar-outside threads=1 workers=1 teacher.path=runs/ar-exported
    python scripts/hf_equivalence.py compare runs/ar runs/ar-outside
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def logits(args: argparse.Namespace) -> None:
    import transformers

    from progdistill.config import validate
    from progdistill.io import read_json
    from progdistill.tasks import build_task
    from progdistill.trajectory import Trajectory

    trajectory = Trajectory(args.trajectory)
    recipe = validate(read_json(Path(args.trajectory).parent / "run.json")["config"])
    task = build_task(recipe.task)
    inputs = task.eval_batches()[0].inputs[:args.sequences]  # the first held-out sequences (a batch has 256)
    inputs = inputs[:, :int((inputs != task.pad_id).sum(1).max())]
    worst = 0.0
    for step in trajectory.steps:
        folder = Path(args.exported) / f"checkpoint-{step}"
        cls = getattr(transformers, json.loads((folder / "config.json").read_text())["architectures"][0])
        exported = cls.from_pretrained(folder, local_files_only=True).eval()
        with torch.no_grad():
            ours = trajectory.load(step)(inputs)
            theirs = exported(input_ids=inputs, attention_mask=(inputs != task.pad_id).long()).logits
        diff = float((ours - theirs).abs().max())
        worst = max(worst, diff)
        print(f"checkpoint {step}: max |logits difference| {diff:.3g} on {len(inputs)} held-out sequences "
              f"(logits up to {float(ours.abs().max()):.3g})")
    print(f"worst over {len(trajectory.steps)} checkpoints: {worst:.3g}")


def compare(args: argparse.Namespace) -> None:
    a, b = (json.loads((Path(run) / "summary.json").read_text()) for run in (args.run, args.other))
    print(f"phases: {a['teacher']['phases']} vs {b['teacher']['phases']}: "
          f"{'the same' if a['teacher']['phases'] == b['teacher']['phases'] else 'DIFFERENT'}")
    worst, count = 0.0, 0
    for label, entry in a["methods"].items():
        for budget, result in entry["budgets"].items():
            for seed, run in result["seeds"].items():
                other = b["methods"].get(label, {}).get("budgets", {}).get(budget, {}).get("seeds", {}).get(seed)
                if other is None:
                    continue
                diff = abs(run["final_accuracy"] - other["final_accuracy"])
                worst, count = max(worst, diff), count + 1
                print(f"  {label:>14} budget {budget} seed {seed}: {run['final_accuracy']:.4f} vs "
                      f"{other['final_accuracy']:.4f} (difference {diff:.4f})")
    print(f"largest final-accuracy difference over {count} students: {worst:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("logits")
    p.add_argument("trajectory")
    p.add_argument("exported")
    p.add_argument("--sequences", type=int, default=64)
    p.set_defaults(fn=logits)
    p = sub.add_parser("compare")
    p.add_argument("run")
    p.add_argument("other")
    p.set_defaults(fn=compare)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.fn(args)


if __name__ == "__main__":
    main()
