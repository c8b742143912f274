"""Your own tasks and models: import paths in recipes, checkpoints that rebuild them, the Python API's checks."""

import json
import textwrap

import pytest
import torch

import progdistill as pd
from progdistill.cli import main
from progdistill.config import RecipeError, load_recipe

PLUGIN = textwrap.dedent('''
    """A user's own task and model, as a recipe names them by import path."""
    import os
    import pathlib
    import subprocess

    import torch
    from torch import nn

    import progdistill as pd
    from progdistill.tasks.base import seeded_generator


    class SignTask(pd.Task):
        """Label = whether the first two coordinates of a Gaussian point have the same sign."""

        name = "sign"

        def __init__(self, d: int, eval_size: int = 256, seed: int = 0, data_seed: int = 0, device="cpu"):
            self.d, self.seed, self.data_seed, self.device = d, seed, data_seed, torch.device(device)
            x = torch.randn(eval_size, d, generator=seeded_generator(self.device, seed, 1), device=self.device)
            self.eval = pd.Batch(x, self.label(x))

        def label(self, x):
            return (x[:, 0] * x[:, 1] > 0).long()

        def model_io(self):
            return {"input_dim": self.d, "num_classes": 2}

        def train_batch(self, step, batch_size):
            gen = seeded_generator(self.device, self.seed, self.data_seed, 2, batch_size, step)
            x = torch.randn(batch_size, self.d, generator=gen, device=self.device)
            return pd.Batch(x, self.label(x))

        def eval_batches(self):
            return [self.eval]


    def make_task(n: int, data_seed: int = 0, device: str = "cpu") -> pd.Task:
        """A factory: the same problem as a TensorTask over n fixed points."""
        x = torch.randn(n, 6, generator=torch.Generator().manual_seed(0))
        return pd.TensorTask(x, (x[:, 0] * x[:, 1] > 0).long(), eval_fraction=0.25, data_seed=data_seed, device=device)


    class Net(nn.Module):
        def __init__(self, input_dim: int, num_classes: int, hidden: int = 32, depth: int = 1):
            super().__init__()
            layers, width = [], input_dim
            for _ in range(depth):
                layers += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            self.net = nn.Sequential(*layers, nn.Linear(width, num_classes))

        def forward(self, x):
            return self.net(x)


    def make_net(input_dim: int, num_classes: int, hidden: int):
        return Net(input_dim, num_classes, hidden)


    def not_a_model(hidden: int = 3):
        return "a string"


    NOT_CALLABLE = 3
''')

RECIPE = textwrap.dedent("""
    name: plugin
    threads: 1
    task: {name: "pd_plugin:SignTask", d: 6, eval_size: 256}
    teacher:
      model: {type: "pd_plugin:Net", hidden: 64}
      steps: 240
      batch_size: 32
      optim: {name: adam, lr: 0.01}
      eval_every: 20
      checkpoint_every: 40
    students:
      model: {type: "pd_plugin:make_net", hidden: 8}
      steps: 60
      batch_size: 32
      optim: {name: adam, lr: 0.01}
      eval_every: 20
      seeds: [0]
      methods: [ce, one-shot, {name: progressive, speed: 4}]
""")


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The module pd_plugin on the Python path (as a user's package would be); yields the folder."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "pd_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(__import__("sys").modules, "pd_plugin", raising=False)
    return folder


def test_task_batch_and_data_tasks_are_exported():
    from progdistill import IGNORE, Batch, DatasetTask, Task, TensorTask  # noqa: F401

    assert IGNORE == -100 and issubclass(TensorTask, Task) and issubclass(DatasetTask, Task)
    assert "train_batch(step, batch_size)" in Task.__doc__ and "pure function" in Task.__doc__


def test_a_custom_model_trains_and_teaches_through_the_python_api(plugin, tmp_path):
    """A user's nn.Module as teacher and student: its checkpoints rebuild from the import path in meta.json
    (before: KeyError 'mynet' when the student loaded the teacher)."""
    from pd_plugin import Net

    task = pd.ParityTask(d=8, k=2, eval_size=32, data_seed=1)
    arch = pd.resolve_architecture({"type": "pd_plugin:Net", "hidden": 16}, task.model_io())
    assert arch == {"type": "pd_plugin:Net", "hidden": 16, "input_dim": 8, "num_classes": 2}
    cfg = pd.TrainConfig(steps=60, batch_size=16, optim={"lr": 0.1}, eval_every=20, checkpoint_every=20)
    torch.manual_seed(0)
    pd.train(pd.build_model(arch), task, cfg, tmp_path / "teacher", {"model": arch}, progress=False)
    trajectory = pd.Trajectory(tmp_path / "teacher")
    rebuilt = trajectory.load(60)
    assert isinstance(rebuilt, Net) and not rebuilt.training
    assert json.loads((tmp_path / "teacher/checkpoint-60/meta.json").read_text())["model"] == arch
    student = Net(8, 2, hidden=4)
    schedule = pd.make_schedule({"name": "progressive"}, trajectory.steps, None)
    record = pd.train(student, task, pd.TrainConfig(steps=50, batch_size=16, kd={"tau": 1.0}, eval_every=10),
                      tmp_path / "student", {"model": {"type": "pd_plugin:Net", "hidden": 4, "input_dim": 8,
                                                       "num_classes": 2}}, schedule, trajectory, progress=False)
    assert [s["checkpoint"] for s in record["supervision"]] == [20, 40, 60]
    assert isinstance(pd.load_checkpoint(tmp_path / "student/checkpoint-50"), Net)
    # a model type nobody can rebuild is refused when training starts, not when a student needs it
    with pytest.raises(ValueError, match="unknown model type 'mynet'; choose from .* or an import path"):
        pd.train(Net(8, 2), task, cfg, tmp_path / "bad", {"model": {"type": "mynet"}}, progress=False)
    with pytest.raises(ValueError, match="meta needs a 'model' entry"):
        pd.train(Net(8, 2), task, cfg, tmp_path / "bad", {}, progress=False)


def test_a_checkpoint_whose_model_cannot_be_imported_is_a_clear_error(plugin, tmp_path):
    arch = {"type": "pd_plugin:Net", "input_dim": 4, "num_classes": 2}
    pd.save_checkpoint(tmp_path / "ckpt", pd.build_model(arch), {"model": {**arch, "type": "gone_module:Net"}})
    with pytest.raises(pd.CheckpointError, match="cannot rebuild its model: cannot import 'gone_module:Net': no module "
                                                 "named 'gone_module'"):
        pd.load_checkpoint(tmp_path / "ckpt")


def test_a_recipe_runs_a_task_and_models_named_by_import_path(plugin, tmp_path):
    """(before: 'task: Input tag ... does not match any of the expected tags')"""
    (tmp_path / "r.yaml").write_text(RECIPE)
    recipe = load_recipe(str(tmp_path / "r.yaml"))
    summary = pd.run_experiment(recipe, tmp_path / "run", progress=False)
    assert set(summary["methods"]) == {"ce", "one-shot", "progressive"}
    assert summary["teacher"]["curve"][-1]["accuracy"] > 0.85
    meta = json.loads((tmp_path / "run/teacher/checkpoint-240/meta.json").read_text())
    assert meta["model"] == {"type": "pd_plugin:Net", "hidden": 64, "input_dim": 6, "num_classes": 2}
    student = pd.load_checkpoint(tmp_path / "run/students/one-shot/budget-60/seed-0/checkpoint-60")
    assert type(student).__name__ == "Net" and student.net[0].out_features == 8
    assert (tmp_path / "run/config.yaml").read_text().count("pd_plugin:") == 3


def test_a_task_factory_and_a_tensors_file_in_recipes(plugin, tmp_path):
    from progdistill.experiment import prepare_run

    recipe = load_recipe(str(_write(tmp_path, RECIPE)), ['task={name: "pd_plugin:make_task", n: 400}'])
    task = pd.build_task(recipe.task, data_seed=3)
    assert isinstance(task, pd.TensorTask) and task.data_seed == 3 and task.train_size == 300
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(1))
    from safetensors.torch import save_file

    save_file({"train_inputs": x, "train_targets": (x[:, 0] > 0).long()}, str(tmp_path / "data.safetensors"))
    file_task = [f"task={{name: tensors, path: {tmp_path / 'data.safetensors'}, eval_fraction: 0.2}}"]
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "r.yaml"), "--out", str(out), "--quiet", *file_task,
                 "teacher.steps=40", "students.steps=20", "students.methods=[one-shot]"]) == 0
    assert json.loads((out / "teacher/checkpoint-40/meta.json").read_text())["model"]["input_dim"] == 5
    # the data file is part of the run: a changed file is refused on resume, before anything is written
    save_file({"train_inputs": x + 1, "train_targets": (x[:, 0] > 0).long()}, str(tmp_path / "data.safetensors"))
    with pytest.raises(RecipeError, match=r"another version of the tensors file \(task.path\) .*data"):
        prepare_run(load_recipe(str(tmp_path / "r.yaml"), file_task + ["teacher.steps=40", "students.steps=20",
                                                                     "students.methods=[one-shot]"]), out)
    save_file({"inputs": x}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"bad.safetensors: unknown tensor\(s\) \['inputs'\]"):
        pd.build_task({"name": "tensors", "path": str(tmp_path / "bad.safetensors"), "eval_fraction": 0.2})


def _write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("override, message", [
    ('teacher.model={type: "pd_plugin:Net", hiden: 3}',
     r"teacher.model: pd_plugin:Net takes no keyword 'hiden' \(it takes: input_dim, num_classes, hidden, "
     r"depth\)"),
    ('students.model={type: "pd_plugin:make_net"}', "students.model: pd_plugin:make_net needs keyword 'hidden'"),
    ('teacher.model={type: "pd_plugn:Net"}', "cannot import 'pd_plugn:Net': no module named 'pd_plugn'"),
    ('teacher.model={type: "pd_plugin:Nett"}', "cannot import 'pd_plugin:Nett': module 'pd_plugin' has no 'Nett'"),
    ('teacher.model={type: "pd_plugin:SignTask"}', "pd_plugin:SignTask is not a torch.nn.Module"),
    ('teacher.model={type: "pd_plugin:NOT_CALLABLE"}',
     r"pd_plugin:NOT_CALLABLE is not a torch.nn.Module class or a Python function that returns one \(a int\)"),
    ('teacher.model={type: "pd_plugin:"}', "is not an import path of the form 'package.module:Name'"),
    ("teacher.model.type=mpl", "teacher.model: Input tag 'mpl' .* 'mlp', 'gpt', 'bert', 'gpt-lm', 'hf', or an import path"),
    ("task.name=party", "task: Input tag 'party' .*'parity'.*, or an import path 'package.module:Name'"),
    ('task={name: "pd_plugin:SignTask"}', "task: pd_plugin:SignTask needs keyword 'd'"),
    ('task={name: "pd_plugin:SignTask", d: 3, dd: 4}', "pd_plugin:SignTask takes no keyword 'dd'"),
    ('task={name: "pd_plugin:SignTask", d: 3, device: cpu}', "keyword 'device' is set by progdistill"),
    ('task={name: "pd_plugin:Net", d: 3}', "pd_plugin:Net is not a progdistill Task"),
    ('task={name: "pd_plugin:make_net", hidden: 3}', "pd_plugin:make_net must accept the keyword.s. data_seed, device"),
    ("probe.nonterminal={}", None),  # a task imported by path: its probes are checked when the run starts
])
def test_bad_plugin_keys_are_named_when_the_recipe_is_read(plugin, tmp_path, override, message):
    path = _write(tmp_path, RECIPE)
    if message is None:
        load_recipe(str(path), [override])
        return
    with pytest.raises(RecipeError, match=message) as error:
        load_recipe(str(path), [override])
    assert len(str(error.value).splitlines()) == 1  # one line: the source and the one problem


@pytest.mark.parametrize("overrides, message", [
    (["students.model.num_classes=3"], r"students.model: pd_plugin:make_net: keywords that do not fit the task: "
                                       r"num_classes 3 \(the task needs 2\)"),
    (['students.model={type: "pd_plugin:not_a_model"}'], None),
    (["probe.nonterminal={}"], r"probe.nonterminal: task pd_plugin:SignTask has no probe 'nonterminal'"),
    (['task={name: "pd_plugin:make_task", n: 2}'], "task: eval_fraction 0.25 of 2 examples leaves an empty"),
])
def test_what_needs_the_task_is_checked_before_any_file_is_written(plugin, tmp_path, capsys, overrides, message):
    out = tmp_path / "run"
    code = main(["run", str(_write(tmp_path, RECIPE)), "--out", str(out), "--quiet", *overrides])
    err = capsys.readouterr().err
    if message is None:  # a factory that returns no model fails when it is called, with one line
        assert code == 2 and err == "error: pd_plugin:not_a_model returned a str, not a torch.nn.Module\n"
        return
    assert code == 2 and len(err.splitlines()) == 1
    assert __import__("re").search(message, err), err
    assert not out.exists()


def test_a_module_in_the_current_directory_is_importable(tmp_path, monkeypatch):
    from progdistill.plugins import import_object

    (tmp_path / "pd_cwd_module.py").write_text("VALUE = 42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert import_object("pd_cwd_module:VALUE") == 42


def test_the_python_api_checks_what_a_recipe_checks():
    """(before: make_schedule ignored 'sped')"""
    saved = [0, 10, 20]
    with pytest.raises(ValueError, match="method.sped: unknown key"):
        pd.make_schedule({"name": "progressive", "sped": 2}, saved, None)
    with pytest.raises(ValueError, match="method: Input tag 'progresive'"):
        pd.make_schedule({"name": "progresive"}, saved, None)
    with pytest.raises(ValueError, match="method.switch: Field required"):
        pd.make_schedule({"name": "two-shot", "checkpoint": 10}, saved, None)
    assert pd.make_schedule({"name": "progressive", "speed": 2}, saved, None).speed == 2
    with pytest.raises(ValueError, match="OptimConfig.lrr: unknown key"):
        pd.OptimConfig(lrr=0.1)
    with pytest.raises(ValueError, match="OptimConfig.name: Input should be 'sgd', 'adam' or 'adamw'"):
        pd.OptimConfig(name="adamm")
    with pytest.raises(ValueError, match="KDConfig: reverse KL needs tau > 0"):
        pd.KDConfig(kind="reverse")
    with pytest.raises(ValueError, match="TrainConfig.optim.lrr: unknown key"):
        pd.TrainConfig(steps=10, batch_size=4, optim={"lrr": 0.1})
    with pytest.raises(ValueError, match="TrainConfig.steps: Input should be greater than or equal to 1"):
        pd.TrainConfig(steps=0, batch_size=4)
    with pytest.raises(ValueError, match="TrainConfig.kd.tua: unknown key"):
        pd.TrainConfig(steps=10, batch_size=4, kd={"tua": 1.0})
    assert pd.TrainConfig(steps=10, batch_size=4, optim={"name": "adam"}).optim.name == "adam"
    with pytest.raises(ValueError, match="task.dd: unknown key"):
        pd.build_task({"name": "parity", "d": 8, "k": 2, "dd": 3})
    with pytest.raises(ValueError, match="task: k=9 .* does not fit in d=8"):
        pd.build_task({"name": "parity", "d": 8, "k": 9})
    assert pd.build_task({"name": "parity", "d": 8, "k": 2, "eval_size": 16}, data_seed=2).data_seed == 2
    with pytest.raises(ValueError, match="model.widht: unknown key"):
        pd.resolve_architecture({"type": "mlp", "width": 4, "widht": 3}, {"input_dim": 4, "num_classes": 2})


@pytest.mark.parametrize("section, payload, refusal", [
    ("students.model", 'type: "pd_plugin:subprocess.run", args: "touch MARKER", shell: true',
     "pd_plugin:subprocess.run is a function of Python's standard library (subprocess), not a torch.nn.Module "
     "factory"),
    ("task", 'name: "pd_plugin:pathlib.Path.touch", self: MARKER',
     "pd_plugin:pathlib.Path.touch is a function of Python's standard library (pathlib), not a progdistill "
     "Task factory"),
    ("task", 'name: "pd_plugin:os.open", path: MARKER, flags: 577',
     "pd_plugin:os.open is not a progdistill Task class or a Python function that returns one (a "
     "builtin_function_or_method)"),
    ("teacher.model", 'type: "os:system", command: "touch MARKER"',
     "'os:system' is in Python's standard library (os), which holds no task or model"),
])
def test_an_import_path_to_anything_but_a_class_or_a_users_function_is_refused_before_it_runs(
        plugin, tmp_path, capsys, section, payload, refusal):
    """A recipe is data: an import path may name a Task / nn.Module class or a Python function of the
    user's own code, not a builtin or a standard-library function (os.system, subprocess.run, ...),
    which would run with the section's keywords before its result could be refused."""
    marker = tmp_path / "MARKER"
    out = tmp_path / "run"
    override = f"{section}={{{payload.replace('MARKER', str(marker))}}}"
    assert main(["run", str(_write(tmp_path, RECIPE)), "--out", str(out), "--quiet", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith(f"{section}: {refusal}\n"), err
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("section, target, keywords", [
    ("teacher.model", "torch:load", "f: PAYLOAD, weights_only: false"),
    ("students.model", "numpy:load", "file: PAYLOAD, allow_pickle: true"),
    ("task", "torch.hub:load", "repo_or_dir: HUB, model: x, source: local"),
])
def test_a_function_of_an_installed_package_is_refused_before_it_unpickles_or_runs_anything(
        plugin, tmp_path, capsys, section, target, keywords):
    """torch.load, numpy.load (with pickles allowed) and torch.hub.load (a local hubconf.py) run any file
    they are given: as factories named by a recipe they are refused, as a function of an installed
    package, before they are called; the payloads' marker is never created."""
    import pickle

    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "payload.pkl").write_bytes(pickle.dumps(Payload()))
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "hubconf.py").write_text(f"open({str(marker)!r}, 'w')\n")
    payload = keywords.replace("PAYLOAD", str(tmp_path / "payload.pkl")).replace("HUB", str(hub))
    key = "name" if section == "task" else "type"
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, RECIPE)), "--out", str(out), "--quiet",
                 f'{section}={{{key}: "{target}", {payload}}}']) == 2
    err = capsys.readouterr().err
    top = target.split(".")[0].split(":")[0]
    kind = "progdistill Task" if section == "task" else "torch.nn.Module"
    assert err.count("\n") == 1 and err.endswith(
        f"{section}: {target} is a function of an installed package ({top}), not a {kind} factory of your own: "
        f"name a {kind} class, or a function in your own module\n"), err
    assert not marker.exists() and not out.exists()
