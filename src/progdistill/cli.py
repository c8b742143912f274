"""Command line: `progdistill run RECIPE [key=value ...]` and one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__
from .config import RecipeError, in_recipe, load_recipe, recipe_names, recipe_text
from .io import CheckpointError
from .processes import Terminated, keep_freed_memory, sigterm_as_interrupt

_OVERRIDES = "key=value overrides of recipe entries, dotted paths, values in YAML (e.g. teacher.steps=2000 " \
             "students.seeds=[0,1] students.methods.2.speed=2)"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _out(args, recipe) -> Path:
    if args.out is not None and not args.out.strip():
        raise RecipeError("--out: an empty path (leave --out out for runs/<recipe name>)")
    return Path(args.out) if args.out else Path("runs") / recipe.name


def _executor(args, recipe):
    """The executor of `--executor`, `--jobs` (default: the recipe's `workers`), `--ray-address`; checked
    before any file is written, started only when the jobs run."""
    from .executors import make_executor

    jobs = args.jobs if args.jobs is not None else (None if args.executor == "ray" else recipe.workers)
    return make_executor(args.executor, jobs, args.ray_address)


def cmd_run(args) -> None:
    from .layout import samples_to_target_text
    from .pipeline import run_experiment

    recipe = load_recipe(args.recipe, args.overrides)
    out = _out(args, recipe)
    executor = _executor(args, recipe)
    try:
        summary = run_experiment(recipe, out, progress=not args.quiet, log=args.log, executor=executor)
    finally:
        executor.close()
    print(f"report: {out / 'report.md'} and {out / 'report.html'}")
    for label, entry in summary["methods"].items():
        for budget, b in entry["budgets"].items():
            print(f"  {label:>14} budget {budget}: median final accuracy {b['median_final_accuracy']:.3f}, "
                  f"median samples to {summary['target']}: {samples_to_target_text(b)} "
                  f"({b['reached_target']}/{len(b['seeds'])} reached)")


def cmd_oracle(args) -> None:
    """The grammar's Bayes-optimal predictor on the recipe's task: held-out loss / accuracy, n-gram probe."""
    from .experiment import score_oracle
    from .tasks import build_task

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.task.name != "pcfg-mlm":
        raise RecipeError(f"oracle: only task pcfg-mlm has a Bayes-optimal predictor, not {recipe.task.name!r}")
    task = build_task(recipe.task, device="cpu")
    options = recipe.probe.ngram.model_dump() if recipe.probe.ngram else {}
    scored = score_oracle(task, {**options, "sentences": args.ngram_sentences} if args.ngram_sentences else None)
    result = {"eval_sentences": len(task.eval_inputs), **scored["eval"]}
    print(f"Bayes-optimal on {result['eval_sentences']} held-out sentences: accuracy {result['accuracy']:.4f}, "
          f"loss {result['loss']:.4f}")
    if "ngram" in scored:
        ngram = result["ngram"] = scored["ngram"]
        for size, w in ngram["windows"].items():
            print(f"  {size}-token window: median M_robust {w['robust']['median']:.3g}, "
                  f"median M_close {w['close']['median']:.3g} ({ngram['pairs']} sentence x position pairs)")
    if args.json:
        print(json.dumps(result))


def cmd_recipes(args) -> None:
    if args.show or args.name:
        try:
            text = recipe_text(args.show or args.name)[0]
        except RecipeError as e:
            raise RecipeError(f"recipes{' --show' if args.show else ''}: {e}") from None
        print(text, end="")
        return
    if args.keys is not None:
        from .recipe_keys import format_keys, recipe_keys

        keys = [k for k in recipe_keys() if k.path.startswith(args.keys)]
        if not keys:
            raise RecipeError(f"recipes --keys: no recipe key starts with {args.keys!r}")
        print(format_keys(keys))
        return
    for name in recipe_names():
        recipe = load_recipe(name)
        print(f"{name:22} {recipe.description.strip().splitlines()[0] if recipe.description else ''}")


def _teacher_stage(args):
    """Load the recipe, prepare the run folder, train (or load) the teacher, detect its phases. A stage
    after the teacher's (probe, distill) says so on stderr when it has to train the teacher first."""
    from .experiment import finished_teacher, prepare_run, teacher_phases, train_teacher
    from .metric_logging import require_backends

    recipe = load_recipe(args.recipe, args.overrides)
    require_backends(getattr(args, "log", []))
    out = prepare_run(recipe, _out(args, recipe))
    if args.command != "teacher" and finished_teacher(recipe, out) is None:
        print(f"{out} has no finished teacher: training it first ({recipe.teacher.steps:,} steps, what "
              f"`progdistill teacher {args.recipe} --out {out}` does), then the {args.command} stage",
              file=sys.stderr)
    trajectory = train_teacher(recipe, out, not args.quiet, getattr(args, "log", []))
    return recipe, out, trajectory, teacher_phases(recipe, trajectory, out)


def cmd_teacher(args) -> None:
    from . import distributed

    if distributed.is_distributed():  # under torchrun: every rank trains, rank 0 writes (distributed.py)
        from .experiment import prepare_run, teacher_phases, train_teacher
        from .metric_logging import require_backends

        recipe = load_recipe(args.recipe, args.overrides)
        if recipe.teacher.path:
            raise RecipeError("teacher.path: torchrun trains a teacher; this recipe reads one from teacher.path")
        require_backends(args.log)
        out = prepare_run(recipe, _out(args, recipe))
        trajectory = train_teacher(recipe, out, not args.quiet and distributed.writes(), args.log)
        if distributed.writes():
            print(f"teacher trajectory: {trajectory.root} ({len(trajectory.steps)} checkpoints); phases: "
                  f"{teacher_phases(recipe, trajectory, out)}")
        return
    _, _, trajectory, phases = _teacher_stage(args)
    where = trajectory.root if trajectory.root is not None else "hub revisions"
    print(f"teacher trajectory: {where} ({len(trajectory.steps)} checkpoints); phases: {phases}")


def cmd_probe(args) -> None:
    from .experiment import probe_trajectory

    executor = _executor(args, load_recipe(args.recipe, args.overrides))
    try:
        recipe, out, trajectory, phases = _teacher_stage(args)
        probe_trajectory(recipe, trajectory, out, phases, not args.quiet, executor)
    finally:
        executor.close()
    print(f"probe results: {out / 'probes'}")


def cmd_distill(args) -> None:
    from .experiment import run_students

    executor = _executor(args, load_recipe(args.recipe, args.overrides))
    try:
        recipe, out, trajectory, phases = _teacher_stage(args)
        run_students(recipe, out, trajectory, phases, not args.quiet, args.log, executor)
    finally:
        executor.close()
    print(f"students: {out / 'students'}")


def cmd_report(args) -> None:
    from .config import validate
    from .layout import read_run_json
    from .runlock import run_folder_locked

    out = Path(args.run)
    if not (out / "run.json").is_file():
        raise RecipeError(f"report: {out} is not a run folder (it has no run.json)")
    recipe = validate(read_run_json(out)["config"], str(out / "run.json"))  # refused before any file is written
    if not recipe.teacher.path and not (out / "teacher" / "curve.json").is_file():  # before the lock: a refusal
        _no_teacher_yet(out)  # leaves the folder as it was (no .lock created or rewritten)
    with run_folder_locked(out):  # it writes summary.json, the report, ...: not while a run writes them
        _report(args, out, recipe)


def _no_teacher_yet(out: Path) -> NoReturn:
    raise RecipeError(f"{out}: the teacher has not finished training; nothing to report yet "
                      f"(`progdistill teacher` or `progdistill run` trains it)")


def _report(args, out: Path, recipe) -> None:
    from .experiment import finished_teacher, summarize, teacher_phases
    from .report import write_report

    traj = finished_teacher(recipe, out)
    if traj is None:
        _no_teacher_yet(out)
    summary = summarize(recipe, out, traj, teacher_phases(recipe, traj, out))
    path = write_report(recipe, out, summary)
    print(f"report: {path} and {path.with_suffix('.html')}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(summary["methods"], indent=1))


def cmd_export(args) -> None:
    from .export import export

    out = export(args.source, args.out_dir)
    print(f"transformers folder: {out} (load it with AutoModelFor....from_pretrained, or use it as teacher.path)")


def _grammar(args):
    from .grammar import expected_length, generate_grammar, load_grammar, truncate_grammar

    if args.source.startswith("generate:"):
        from .config import GenerateSpec, validate_section

        items = [item for item in args.source[len("generate:"):].split(",") if item]
        bad = [item for item in items if "=" not in item]
        if bad:
            raise ValueError(f"{args.source}: {bad[0]!r} is not KEY=VALUE (e.g. generate:levels=3,rhs_lengths=2/3)")
        spec = dict(item.split("=", 1) for item in items)
        if "rhs_lengths" in spec:
            spec["rhs_lengths"] = spec["rhs_lengths"].split("/")
        checked = validate_section(GenerateSpec, spec, "generate")  # names the bad key, as a recipe would
        grammar = generate_grammar(**checked.model_dump())
    else:
        grammar = load_grammar(args.source)
    if args.truncate is not None:
        if not 0 <= args.truncate <= grammar.depth:
            raise RecipeError(f"--truncate {args.truncate}: the grammar's levels are 0 to {grammar.depth}")
        grammar = truncate_grammar(grammar, args.truncate)
    expected = expected_length(grammar) * args.n
    if not expected <= MAX_SAMPLED_TOKENS:  # also refuses an infinite mean length (nan / inf)
        raise ValueError(f"{args.source}: {args.n:,} sentences of mean length {expected_length(grammar):,.4g} are about "
                         f"{expected:,.4g} tokens, beyond the limit of {MAX_SAMPLED_TOKENS:,} (use a smaller -n or grammar)")
    return grammar


MAX_SAMPLED_TOKENS = 10**8  # `grammar show / sample`: tokens sampled in all (about 8 bytes each, and their trees)


def cmd_grammar_show(args) -> None:
    from .grammar import expected_length, format_grammar, length_stats, sample_sentences

    grammar = _grammar(args)
    print(format_grammar(grammar))
    for i, level in enumerate(grammar.levels):
        print(f"level {i}: {' '.join(level)}")
    lengths = sample_sentences(grammar, args.n, seed=args.seed, trees=False).lengths
    print(f"sentence length over {args.n} samples: {length_stats(lengths)}; exact mean {expected_length(grammar):.2f}")


def cmd_grammar_sample(args) -> None:
    from .grammar import sample_sentences

    grammar = _grammar(args)
    sample = sample_sentences(grammar, args.n, seed=args.seed, trees=args.trees)
    for i in range(args.n):
        n = int(sample.lengths[i])
        print(" ".join(grammar.terminals[t] for t in sample.tokens[i, :n]))
        if args.trees:
            for level in range(grammar.depth):
                names = grammar.levels[level + 1]
                print(f"  level {level + 1}: " + " ".join(names[a] for a in sample.ancestors[i, :n, level]))


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line `error: PROG: message` and exit 2, like every other bad input
    (`--help` still prints the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="progdistill",
        description="Progressive distillation: train a teacher, probe its trajectory, distill students "
                    "from its checkpoints with several schedules, and report.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name: str, fn, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("recipe", help="a shipped recipe name (see `progdistill recipes`) or a YAML file (./NAME for a file named like a shipped recipe)")
        p.add_argument("overrides", nargs="*", default=[], help=_OVERRIDES)
        p.add_argument("--out", help="run folder (default: runs/<recipe name>); an interrupted run resumes there, "
                       "and a config that only adds seeds, budgets or methods grows it")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name != "probe":
            p.add_argument("--log", action="append", default=[], choices=["tensorboard", "wandb"],
                           help="also send the live metrics (written to every model's metrics.jsonl) to TensorBoard "
                                "or Weights & Biases in offline mode; repeatable; needs the extra of that name")
        if name in ("run", "probe", "distill"):
            p.add_argument("--executor", default="local", metavar="NAME",
                           help="where the probe and student group jobs run: local (this process, or --jobs processes) or "
                                "ray (needs the ray extra; a local Ray instance unless --ray-address); see "
                                "docs/executors.md")
            p.add_argument("--jobs", type=_positive, metavar="N",
                           help="probe and student group jobs at once (default: the recipe's workers; on Ray, the cluster's "
                                "CPUs); each gets threads/N torch threads")
            p.add_argument("--ray-address", metavar="ADDR",
                           help="the Ray cluster to use (ray.init(address=ADDR), e.g. auto or ray://head:10001)")
        p.set_defaults(fn=fn)
        return p

    stage("run", cmd_run, "the whole experiment: teacher -> probes -> students -> report")
    stage("teacher", cmd_teacher, "train the teacher and save its checkpoint trajectory")
    stage("probe", cmd_probe, "run the recipe's curriculum probes over the teacher trajectory")
    stage("distill", cmd_distill, "train the students (every method x budget x seed)")
    text = "(re)write report.md, report.html, plots and summary.json of a run folder, at any stage of the run"
    p = sub.add_parser("report", help=text, description=text)
    p.add_argument("run", help="a run folder made by `progdistill run`")
    p.add_argument("--json", action="store_true", help="print the per-method summary as JSON on stdout (the "
                   "report's path goes to stderr)")
    p.set_defaults(fn=cmd_report)
    grammar = sub.add_parser("grammar", help="show or sample a grammar", description="show or sample a grammar"
                             ).add_subparsers(dest="action", required=True)
    for name, fn, text in (("show", cmd_grammar_show, "print a grammar, its levels and sentence-length statistics"),
                           ("sample", cmd_grammar_sample, "print sample sentences (and their parse trees)")):
        p = grammar.add_parser(name, help=text, description=text)
        p.add_argument("source", help="a grammar file, or generate:levels=3,symbols_per_level=3,"
                                      "rules_per_symbol=2,rhs_lengths=2/3,terminals=3,seed=0")
        p.add_argument("--truncate", type=int, help="make the symbols of this level pre-terminals")
        p.add_argument("-n", type=_positive, default=10000 if name == "show" else 5, help="number of sentences")
        p.add_argument("--seed", type=int, default=0)
        if name == "sample":
            p.add_argument("--trees", action="store_true", help="also print each token's ancestor per level")
        p.set_defaults(fn=fn)
    text = "score the grammar's exact Bayes-optimal masked LM on a pcfg-mlm recipe's held-out set (CPU)"
    p = sub.add_parser("oracle", help=text, description=text)
    p.add_argument("recipe", help="a shipped recipe name or a YAML file (task.eval_size sets the sentences)")
    p.add_argument("overrides", nargs="*", default=[], help=_OVERRIDES)
    p.add_argument("--ngram-sentences", type=_positive, metavar="N",
                   help="also run the n-gram probe on the first N held-out sentences")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.set_defaults(fn=cmd_oracle)
    text = ("write a checkpoint as a transformers folder (config.json + model.safetensors: gpt-lm as GPT2LMHeadModel, "
            "bert with layout hf as BertForMaskedLM), or every checkpoint of a teacher trajectory as a Trainer-style "
            "folder (checkpoint-N/ with trainer_state.json)")
    p = sub.add_parser("export", help=text, description=text)
    p.add_argument("source", help="a checkpoint folder (with meta.json) or a trajectory folder (RUN/teacher)")
    p.add_argument("out_dir", help="the folder to write")
    p.set_defaults(fn=cmd_export)
    text = "list the shipped recipes, print one, or document every recipe key"
    p = sub.add_parser("recipes", help=text, description=text)
    group = p.add_mutually_exclusive_group()
    group.add_argument("name", nargs="?", metavar="NAME", help="print only this recipe's YAML (as --show NAME)")
    group.add_argument("--show", metavar="NAME", help="print only this recipe's YAML (a shipped name or a file)")
    group.add_argument("--keys", nargs="?", const="", metavar="PREFIX",
                       help="print every recipe key (or those starting with PREFIX, e.g. students.kd) with its "
                            "type, default and description")
    p.set_defaults(fn=cmd_recipes)
    return parser


def _clip(text: str, size: int) -> str:
    """`text` cut to about `size` characters in its middle, keeping its end (where the advice is)."""
    if len(text) <= size:
        return text
    tail = min(120, size // 3)
    return text[:size - tail] + " ... " + text[-tail:]


def one_line(message: str, part: int = 500, whole: int = 1200) -> str:
    """An error message on one line: its lines joined by '; ', each cut in its middle to about `part`
    characters and the whole to about `whole`, keeping the start (what is wrong) and the end (what to
    do); a 10 MB grammar line is not echoed to the terminal."""
    lines = [" ".join(line.split()) for line in message.splitlines() if line.strip()]
    text = "; ".join(_clip(line, part) for line in lines)
    return text if len(text) <= whole else text[:whole] + f"... ({len(lines)} problems in all)"


class _LineTracking:
    """A text stream (stderr) that notes whether what was last written to it ended its line: a progress
    bar's `\r` lines do not, and an error printed after one must start a line of its own (`grep ^error:`
    on a log). Everything else is the stream's."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.at_line_start = True

    def write(self, text: str) -> int:
        if text:  # on a terminal a bar's closing `\r` returns to the line's start; in a file it does not
            self.at_line_start = text.endswith("\n") or (text.endswith("\r") and self._tty())
        return self._stream.write(text)

    def _tty(self) -> bool:
        try:
            return bool(self._stream.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _say(line: str) -> None:
    """Print `line` (an error, the interruption) on stderr on a line of its own: a progress bar still open
    (in a frame of the exception's traceback) is closed first, and a bar's unfinished line is ended."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()
    stream = sys.stderr
    if isinstance(stream, _LineTracking) and not stream.at_line_start:
        stream.write("\n")
    print(line, file=stream)


def _error(message: str) -> None:
    _say(f"error: {message}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if unknown:
        bare = hasattr(args, "overrides") and any(not x.startswith("-") for x in unknown)
        parser.error(f"unrecognized arguments: {' '.join(unknown)}" + (" (an override is key=value, e.g. "
                                                                       "teacher.steps=2000)" if bare else ""))
    if extra:
        args.overrides = args.overrides + extra
    keep_freed_memory()
    stderr = sys.stderr
    sys.stderr = _LineTracking(stderr)  # for an error after a progress bar (`_error`)
    with sigterm_as_interrupt():  # SIGTERM unwinds like Ctrl-C: Terminated, a KeyboardInterrupt
        try:
            from .distributed import is_distributed

            if is_distributed() and args.command != "teacher":
                raise RecipeError(f"torchrun: only `progdistill teacher` trains data-parallel, not `{args.command}` "
                                  "(run the other stages in one process; --jobs / --executor ray spread students)")
            args.fn(args)
        except (RecipeError, CheckpointError, ValueError) as e:
            message = str(e)
            if isinstance(e, RecipeError) and e.keys and isinstance(getattr(args, "recipe", None), str):
                message = in_recipe(e, args.recipe, args.overrides)  # a key of a valid recipe: say which recipe
            _error(one_line(message))
            return 2
        except OSError as e:  # a path the system refuses before anything is written (a name too long, ...)
            where = f"{e.filename}: " if e.filename is not None else ""
            _error(one_line(where + (e.strerror or str(e))))
            return 2
        except KeyboardInterrupt as e:
            if isinstance(e, Terminated):
                _say("terminated; run the same command again to resume")
                return 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended
            _say("interrupted; run the same command again to resume")
            return 130
        finally:
            sys.stderr = stderr
    return 0


if __name__ == "__main__":
    sys.exit(main())
