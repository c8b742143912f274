"""Teacher trajectories from outside progdistill: a transformers.Trainer output folder, hub revisions in a
local cache (a fake one in tmp: never the network), and exported native trajectories.
"""

import builtins
import hashlib
import json
import os
import pickle
import shutil
import textwrap

import pytest
import torch

from progdistill.cli import main
from progdistill.config import load_recipe
from progdistill.experiment import finished_teacher, prepare_run
from progdistill.external import ExternalTrajectory, parse_revisions, step_of_revision
from progdistill.tasks import build_task

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

PICKLED = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin")
TASK = {"name": "pcfg-mlm", "grammar": {"generate": {"levels": 2, "seed": 0}}, "eval_size": 64}
METHODS = "[ce, one-shot, {name: progressive, start: drop_start}, {name: two-shot, switch: 10}, adaptive, auto]"
HF_BERT = {"type": "hf", "class": "AutoModelForMaskedLM", "config": {
    "model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 32, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}
BUILTIN_BERT = {"type": "bert", "layers": 1, "heads": 2, "head_dim": 8}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


class TaskRows(torch.utils.data.Dataset):
    """The rows of a progdistill task's batches as Trainer examples, padded to the task's length."""

    def __init__(self, batches, seq_len, pad_id):
        rows = sum(b.size for b in batches)
        self.inputs = torch.full((rows, seq_len), pad_id, dtype=torch.long)
        self.labels = torch.full((rows, seq_len), -100, dtype=torch.long)
        start = 0
        for b in batches:
            self.inputs[start:start + b.size, :b.inputs.shape[1]] = b.inputs
            self.labels[start:start + b.size, :b.targets.shape[1]] = b.targets
            start += b.size
        self.pad_id = pad_id

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        return {"input_ids": self.inputs[i], "attention_mask": (self.inputs[i] != self.pad_id).long(),
                "labels": self.labels[i]}


def masked_accuracy(prediction):
    predicted, labels = prediction.predictions.argmax(-1), prediction.label_ids
    keep = labels != -100
    return {"accuracy": float((predicted[keep] == labels[keep]).mean())}


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory):
    """A tiny BERT teacher trained by transformers.Trainer on the tiny grammar task: checkpoint-N folders
    every 20 of 120 steps, evaluated every 10 steps on the task's held-out set."""
    torch.set_num_threads(1)
    task = build_task(load_recipe_dict().task)
    io = task.model_io()
    config = transformers.AutoConfig.for_model(
        "bert", vocab_size=io["vocab_size"], hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=io["seq_len"], pad_token_id=io["pad_id"])
    torch.manual_seed(0)
    model = transformers.AutoModelForMaskedLM.from_config(config)
    out = tmp_path_factory.mktemp("trainer") / "teacher"
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=120, per_device_train_batch_size=16, per_device_eval_batch_size=64,
        learning_rate=3e-3, save_steps=20, eval_strategy="steps", eval_steps=10, logging_steps=10, report_to=[],
        use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model, args=args, compute_metrics=masked_accuracy,
                                   train_dataset=TaskRows([task.train_batch(s, 16) for s in range(120)], io["seq_len"],
                                                          io["pad_id"]),
                                   eval_dataset=TaskRows(task.eval_batches(), io["seq_len"], io["pad_id"]))
    trainer.train()
    return out


def load_recipe_dict(**teacher):
    from progdistill.config import validate

    return validate({"task": TASK, "teacher": teacher or {"path": "unused"}, "students": {
        "model": BUILTIN_BERT, "steps": 20, "batch_size": 16, "seeds": [0], "methods": ["ce"]}})


def recipe_file(tmp_path, teacher_path, student, methods=METHODS, sweep="{switch: 10, budget: 20, checkpoints: [40, 80]}",
                probe="{}"):
    file = tmp_path / "recipe.yaml"
    file.write_text(textwrap.dedent(f"""
        name: from-outside
        threads: 1
        task: {json.dumps(TASK)}
        teacher: {{path: {json.dumps(teacher_path)}}}
        phases: {{sharpness: 0, noise: 0}}  # a tiny teacher: no sharp drop, its steepest stretch stands in
        probe: {probe}
        students:
          model: {json.dumps(student)}
          steps: 20
          batch_size: 16
          optim: {{name: adamw, lr: 3.0e-3}}
          eval_every: 5
          seeds: [0]
          methods: {methods}
          sweep: {sweep}
        report: {{target: 0.5}}
    """))
    return file


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def pickle_spy(monkeypatch):
    """Every path opened by Python code or torch.load; the Trainer's pickled files must never be among them
    (checked when the test ends)."""
    opened = []
    real_open, real_load = builtins.open, torch.load

    def spy_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_load(file, *args, **kwargs):
        opened.append(str(file))
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(torch, "load", spy_load)
    yield opened
    assert not [p for p in opened if os.path.basename(p) in PICKLED]


@pytest.mark.parametrize("student", ["hf", "builtin"])
def test_trainer_teacher_distills_students_with_every_method(tmp_path, trainer_run, student, pickle_spy):
    before = snapshot(trainer_run)
    assert all((trainer_run / "checkpoint-120" / f).is_file() for f in PICKLED)  # present, and never opened
    out = tmp_path / "run"
    probe = "{ngram: {sentences: 8, n_max: 2, positions: 2}, nonterminal: {train_sentences: 32, test_sentences: 16, steps: 10}}"
    recipe = recipe_file(tmp_path, str(trainer_run), HF_BERT if student == "hf" else BUILTIN_BERT, probe=probe)
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in ("ngram", "nonterminal"):  # the probes read the Trainer's checkpoints too
        rows = json.loads((out / "probes" / f"teacher_{name}.json").read_text())
        assert [r["step"] for r in rows] == [20, 40, 60, 80, 100, 120] and rows[0]["loss"] == summary["teacher"]["curve"][1]["loss"]
    assert set(summary["methods"]) == {"ce", "one-shot", "progressive", "two-shot", "adaptive", "auto"}
    assert [e["checkpoint"] for e in summary["sweep"]] == [40, 80]
    for entry in summary["methods"].values():
        assert 0 <= entry["budgets"]["20"]["median_final_accuracy"] <= 1
    history = json.loads((trainer_run / "checkpoint-120" / "trainer_state.json").read_text())["log_history"]
    evals = [(e["step"], e["eval_loss"], e["eval_accuracy"]) for e in history if "eval_loss" in e]
    assert [(p["step"], p["loss"], p["accuracy"]) for p in summary["teacher"]["curve"]] == evals
    assert summary["teacher"]["checkpoints"] == [20, 40, 60, 80, 100, 120]
    assert summary["teacher"]["phases"] is not None
    assert not (out / "teacher_curve.json").exists()  # the curve came from trainer_state.json
    assert snapshot(trainer_run) == before  # nothing written into the user's folder
    final = out / "students" / "auto" / "budget-20" / "seed-0" / "checkpoint-20"
    if student == "hf":
        loaded = transformers.AutoModelForMaskedLM.from_pretrained(final, local_files_only=True)
        assert loaded.config.hidden_size == 16


def test_worker_processes_open_the_trainer_folder_again(tmp_path, trainer_run):
    """Probe and student jobs in other processes (`--jobs 2`) open `teacher.path` themselves and give
    the run folder of one process."""
    probe = "{ngram: {sentences: 8, n_max: 1, positions: 2}}"
    recipe = recipe_file(tmp_path, str(trainer_run), BUILTIN_BERT, methods="[ce, {name: two-shot, checkpoint: 40, switch: 10}]",
                         sweep="null", probe=probe)
    runs = {jobs: tmp_path / f"jobs-{jobs}" for jobs in ("1", "2")}
    for jobs, out in runs.items():
        assert main(["run", str(recipe), "--out", str(out), "--quiet", "--jobs", jobs]) == 0
    one, two = (json.loads((out / "summary.json").read_text()) for out in runs.values())
    assert one["methods"] == two["methods"] and set(one["methods"]) == {"ce", "two-shot"}
    files = ["probes/teacher_ngram.json", "students/two-shot/budget-20/seed-0/curve.json"]
    assert [(runs["1"] / f).read_bytes() for f in files] == [(runs["2"] / f).read_bytes() for f in files]


def test_trainer_folder_without_eval_entries_is_evaluated_once(tmp_path, trainer_run, pickle_spy, capsys):
    """No eval in log_history: progdistill evaluates the checkpoints on the task and caches the curve in the run
    folder. A checkpoint with only pytorch_model.bin is read with weights_only=True; the pickled Trainer files,
    here replaced by pickles that would run code, are never opened."""
    folder = tmp_path / "teacher"
    shutil.copytree(trainer_run, folder)
    marker = tmp_path / "pickle-was-loaded"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    for ckpt in folder.glob("checkpoint-*"):
        state = json.loads((ckpt / "trainer_state.json").read_text())
        state["log_history"] = [e for e in state["log_history"] if "eval_loss" not in e]
        (ckpt / "trainer_state.json").write_text(json.dumps(state))
        for name in PICKLED:
            (ckpt / name).write_bytes(pickle.dumps(Payload()))
    from safetensors.torch import load_file

    bin_only = folder / "checkpoint-40"
    torch.save(load_file(str(bin_only / "model.safetensors")), bin_only / "pytorch_model.bin")
    (bin_only / "model.safetensors").unlink()
    pickle_spy.clear()  # what the test itself copied and wrote does not count
    recipe = load_recipe(str(recipe_file(tmp_path, str(folder), BUILTIN_BERT, methods="[one-shot, auto]", sweep="null")))
    out = prepare_run(recipe, tmp_path / "run")
    trajectory = finished_teacher(recipe, out)
    assert isinstance(trajectory, ExternalTrajectory) and trajectory.curve_from is None
    cached = json.loads((out / "teacher_curve.json").read_text())
    task = build_task(recipe.task)
    assert cached["curve"][1] == {"step": 40, **task.evaluate(trajectory.load(40))}
    assert [p["step"] for p in trajectory.curve()] == [20, 40, 60, 80, 100, 120]
    loads = []
    real = ExternalTrajectory.load
    ExternalTrajectory.load = lambda self, *a, **k: loads.append(1) or real(self, *a, **k)
    try:
        assert finished_teacher(recipe, out).curve() == trajectory.curve() and not loads  # read from the cache
        curve_file = out / "teacher_curve.json"
        curve_file.write_text(curve_file.read_text()[:40])  # truncated: a derived file, evaluated again
        capsys.readouterr()
        assert finished_teacher(recipe, out).curve() == trajectory.curve() and len(loads) == 6
        err = capsys.readouterr().err
        assert err.startswith(f"warning: {curve_file}: not valid JSON (truncated or corrupt?): ") and \
            err.endswith("; evaluating the checkpoints again\n") and err.count("\n") == 1
        assert json.loads(curve_file.read_text()) == cached
    finally:
        ExternalTrajectory.load = real
    assert main(["distill", str(tmp_path / "recipe.yaml"), "--out", str(out), "--quiet"]) == 0
    assert not marker.exists()
    # a pytorch_model.bin that is not plain tensors is refused, in one line
    (bin_only / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="refused: not a plain-tensor"):
        finished_teacher(recipe, out)
    assert not marker.exists()


def fake_hub(cache, repo, revisions):
    """A Hugging Face hub cache laid out as huggingface_hub writes it: refs/<revision> -> commit,
    snapshots/<commit>/ files."""
    base = cache / f"models--{repo.replace('/', '--')}"
    for revision, source in revisions.items():
        commit = hashlib.sha1(revision.encode()).hexdigest()
        snap = base / "snapshots" / commit
        snap.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy(source / name, snap / name)
        (base / "refs").mkdir(exist_ok=True)
        (base / "refs" / revision).write_text(commit)


def test_hub_revisions_from_the_local_cache(tmp_path, trainer_run, monkeypatch, capsys):
    cache = tmp_path / "hub"
    names = {f"step{s}": s for s in (20, 40, 60, 80, 100, 120)}
    fake_hub(cache, "org/tiny-bert", {r: trainer_run / f"checkpoint-{s}" for r, s in names.items()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    entries = [f"org/tiny-bert@{r}" for r in names]
    out = tmp_path / "run"
    recipe = recipe_file(tmp_path, entries, HF_BERT, sweep="null")
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher"]["checkpoints"] == list(names.values()) and summary["teacher"]["phases"] is not None
    assert set(summary["methods"]) == {"ce", "one-shot", "progressive", "two-shot", "adaptive", "auto"}
    assert json.loads((out / "teacher_curve.json").read_text())["checkpoints"] == entries
    capsys.readouterr()
    # a revision that is not in the cache: one line, before any file of the run
    assert main(["run", str(recipe), "--out", str(tmp_path / "run2"), "--quiet",
                 f"teacher.path={json.dumps(entries + ['org/tiny-bert@step140'])}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "org/tiny-bert@step140: not in the local Hugging Face cache" in err and "never downloads" in err
    assert err.count("\n") == 0 and not (tmp_path / "run2").exists()


def test_revision_steps():
    assert step_of_revision("step1000") == 1000 and step_of_revision("step1000-tokens4B") == 1000
    assert step_of_revision("v3") == 3 and step_of_revision("main") is None
    assert step_of_revision("a1b2c3d4e5f6") is None  # a commit hash
    assert parse_revisions(["a/b@step20", "a/b@main"], {"main": 40}) == [(20, "a/b", "step20"), (40, "a/b", "main")]
    with pytest.raises(ValueError, match="no training step in the revision's name; give it in teacher.revision_steps"):
        parse_revisions(["a/b@main"])
    with pytest.raises(ValueError, match="not of the form repo@revision"):
        parse_revisions(["a/b"])
    with pytest.raises(ValueError, match="step 20 is also"):
        parse_revisions(["a/b@step20", "a/b@v20"])


@pytest.mark.parametrize("damage, message", [
    ("vocab", "its model does not fit the task: vocab_size 9 (the task needs 8)"),
    ("shape", "its weights do not match its config.json: wrong shapes: bert.embeddings.position_embeddings.weight"),
    ("config", "not the architecture of"),
    ("native", "a progdistill checkpoint without its meta.json"),
    ("empty", "no checkpoint-<step> folders"),
])
def test_a_bad_trajectory_is_refused_before_any_file(tmp_path, trainer_run, damage, message, capsys):
    folder = tmp_path / "teacher"
    shutil.copytree(trainer_run, folder)
    ckpt = folder / "checkpoint-60"
    config = json.loads((ckpt / "config.json").read_text())
    if damage == "vocab":
        for c in folder.glob("checkpoint-*"):
            (c / "config.json").write_text(json.dumps({**config, "vocab_size": 9}))
    elif damage == "shape":
        from safetensors.torch import load_file, save_file

        state = load_file(str(ckpt / "model.safetensors"))
        state["bert.embeddings.position_embeddings.weight"] = torch.zeros(3, 32)
        save_file(state, str(ckpt / "model.safetensors"))
    elif damage == "config":
        (ckpt / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    elif damage == "native":
        for c in folder.glob("checkpoint-*"):
            (c / "config.json").write_text(json.dumps({"model_type": "progdistill-checkpoint", "progdistill": {}}))
    else:
        for c in folder.glob("checkpoint-*"):
            shutil.rmtree(c)
    out = tmp_path / "run"
    assert main(["run", str(recipe_file(tmp_path, str(folder), BUILTIN_BERT)), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0, err
    assert not out.exists()


def test_exported_trajectory_as_a_trainer_run_gives_the_native_results(tmp_path):
    """Test-sized equivalence: a gpt-lm teacher trained by progdistill, exported as a Trainer-style folder of
    GPT2LMHeadModel checkpoints, supervises a built-in student exactly as the native trajectory does."""
    recipe = tmp_path / "ar.yaml"
    recipe.write_text(textwrap.dedent("""
        name: ar
        threads: 1
        task: {name: pcfg-ar, grammar: {generate: {levels: 2, seed: 0}}, eval_size: 64, level: 2}
        teacher:
          model: {type: gpt-lm, layers: 1, heads: 2, head_dim: 8}
          steps: 60
          batch_size: 16
          optim: {name: adamw, lr: 3.0e-3}
          eval_every: 10
          checkpoint_every: 10
        phases: {sharpness: 0, noise: 0}  # a tiny teacher: no sharp drop, its steepest stretch stands in
        students:
          model: {type: gpt-lm, layers: 1, heads: 1, head_dim: 8}
          steps: 20
          batch_size: 16
          optim: {name: adamw, lr: 3.0e-3}
          eval_every: 10
          seeds: [0]
          methods: [one-shot, {name: progressive, start: drop_start}, {name: two-shot, switch: 10}, adaptive, auto]
        report: {target: 0.5}
    """))
    native = tmp_path / "native"
    assert main(["run", str(recipe), "--out", str(native), "--quiet"]) == 0
    assert main(["export", str(native / "teacher"), str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "checkpoint-60" / "trainer_state.json").is_file()
    outside = tmp_path / "outside"
    assert main(["run", str(recipe), "--out", str(outside), "--quiet", f"teacher.path={tmp_path / 'exported'}"]) == 0
    a, b = (json.loads((run / "summary.json").read_text()) for run in (native, outside))
    assert a["teacher"]["phases"] == b["teacher"]["phases"]
    assert [(p["step"], p["loss"], p["accuracy"]) for p in a["teacher"]["curve"]] == \
        [(p["step"], p["loss"], p["accuracy"]) for p in b["teacher"]["curve"]]
    for label, entry in a["methods"].items():
        for seed, result in entry["budgets"]["20"]["seeds"].items():
            other = b["methods"][label]["budgets"]["20"]["seeds"][seed]["final_accuracy"]
            assert abs(result["final_accuracy"] - other) <= 0.002, (label, seed)


def test_hub_cache_location(monkeypatch, tmp_path):
    from progdistill.external import hub_cache_dir

    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert hub_cache_dir() == str(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub_cache_dir() == str(tmp_path / "elsewhere")


def test_a_trainer_folder_without_architectures_follows_the_hint(tmp_path, trainer_run, capsys):
    """config.json without `architectures`: the error names the key that fixes it, and that key works."""
    from progdistill.config import RecipeError, validate
    from progdistill.experiment import check_task_and_models

    folder = tmp_path / "teacher"
    shutil.copytree(trainer_run, folder)
    for c in folder.glob("checkpoint-*"):
        config = json.loads((c / "config.json").read_text())
        config.pop("architectures", None)
        (c / "config.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    assert main(["run", str(recipe_file(tmp_path, str(folder), BUILTIN_BERT)), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has no architectures entry naming a masked LM, causal LM or sequence classifier; name the class that loads them " \
        "with teacher.model: {type: hf, class: AutoModelForMaskedLM}" in err and not out.exists()
    hinted = {"path": str(folder), "model": {"type": "hf", "class": "AutoModelForMaskedLM"}}
    recipe = validate({"task": TASK, "teacher": hinted, "students": {
        "model": BUILTIN_BERT, "steps": 20, "batch_size": 16, "seeds": [0], "methods": ["ce"]}})
    check_task_and_models(recipe)  # the trajectory opens with the class from the recipe
    with pytest.raises(RecipeError, match=r"students\.model: give exactly one of config \(with a model_type\) and path"):
        validate({"task": TASK, "teacher": hinted, "students": {
            "model": {"type": "hf", "class": "AutoModelForMaskedLM"}, "steps": 20, "batch_size": 16, "seeds": [0],
            "methods": ["ce"]}})
