"""Small command-line behaviours: --version, report --json, recipes --show / --keys, stage messages,
validation of checkpoints against teacher.steps, one-number seeds, recipe files without a name."""

import json

import pytest

from progdistill import __version__
from progdistill.cli import main
from progdistill.config import RecipeError, load_recipe, recipe_names, recipe_text

from test_config_cli import TINY


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"progdistill {__version__}\n"


def test_run_without_arguments_asks_only_for_the_recipe(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run"])
    err = capsys.readouterr().err
    assert "the following arguments are required: recipe" in err and "overrides" not in err.splitlines()[-1]
    assert stop.value.code == 2 and err.startswith("error: progdistill run: ") and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [(["run", "x.yaml", "--jobs", "0"], "argument --jobs: must be a positive"),
                                           (["run", "x.yaml", "--quiet", "a=1", "teacher.steps"],
                                            "unrecognized arguments: teacher.steps (an override is key=value, e.g. "),
                                           ([], "the following arguments are required: command"),
                                           (["grammar", "sample", "g.txt", "-n", "-1"], "-n")])
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: progdistill") and len(err.splitlines()) == 1, err
    assert message in err


@pytest.mark.parametrize("how", [["--show"], []])
def test_recipes_show_prints_only_that_recipe(how, capsys):
    """`recipes NAME` is `recipes --show NAME`; an unknown name is one `error: recipes[ --show]: ...` line."""
    assert main(["recipes", *how, "parity-mlp-small"]) == 0
    assert capsys.readouterr().out == recipe_text("parity-mlp-small")[0]
    assert main(["recipes", *how, "parity-mlp-smal"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"error: {' '.join(['recipes', *how])}: unknown recipe 'parity-mlp-smal' (did you mean 'parity-mlp-small'?); "
        f"shipped recipes: {', '.join(recipe_names())}\n")


def test_every_recipe_key_is_documented(capsys):
    from progdistill.recipe_keys import recipe_keys

    keys = recipe_keys()
    assert {"task.d", "teacher.optim.lr", "students.kd.tau", "students.methods[].speed", "probe.ngram.n_max",
            "report.target"} <= {k.path for k in keys}
    assert [k.path for k in keys if not k.description] == []
    assert main(["recipes", "--keys", "students.kd"]) == 0
    out = capsys.readouterr().out
    assert "students.kd.tau\n    float (≥ 0); default 0.0\n    temperature; 0 = teacher argmax as hard label" in out
    assert "teacher." not in out
    assert main(["recipes", "--keys"]) == 0
    out = capsys.readouterr().out
    assert "students.methods[].switch   (with name: two-shot)" in out and "task.grammar   (with name: pcfg-mlm | pcfg-ar)" in out
    assert main(["recipes", "--keys", "nope"]) == 2 and "no recipe key starts with 'nope'" in capsys.readouterr().err


def test_later_stages_say_they_train_the_teacher_and_report_json_is_only_json(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    small = ["--quiet", "teacher.steps=100", "students.steps=20", "students.methods=[ce, one-shot]", "students.seeds=0"]
    assert main(["distill", str(tiny), "--out", str(out), *small]) == 0
    assert f"{out} has no finished teacher: training it first (100 steps, what `progdistill teacher" in \
        capsys.readouterr().err
    assert main(["distill", str(tiny), "--out", str(out), *small]) == 0
    assert "no finished teacher" not in capsys.readouterr().err  # the second time there is one
    assert main(["report", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)) == {"ce", "one-shot"}
    assert captured.err.startswith(f"report: {out / 'report.md'} and {out / 'report.html'}")


def test_a_checkpoint_past_the_teachers_steps_is_refused_when_the_recipe_is_read(tiny, tmp_path, capsys):
    with pytest.raises(RecipeError, match=r"students.methods.1.checkpoint: checkpoint 700 is past the teacher's last "
                                          r"step \(teacher.steps = 600\)"):
        load_recipe(str(tiny), ["students.methods=[ce, {name: two-shot, checkpoint: 700, switch: 10}]"])
    with pytest.raises(RecipeError, match=r"students.sweep.checkpoints: \[650\] past the teacher's last step"):
        load_recipe(str(tiny), ["students.sweep={switch: 10, checkpoints: [100, 650]}"])
    with pytest.raises(RecipeError, match="students.methods.0.start: checkpoint 601"):
        load_recipe(str(tiny), ["students.methods=[{name: progressive, start: 601}]"])
    assert load_recipe(str(tiny), ["students.methods=[{name: two-shot, checkpoint: 600, switch: 10}]"])
    # with a saved teacher, its trajectory decides (checked before any student trains)
    assert load_recipe(str(tiny), ["teacher.path=somewhere", "students.methods=[{name: two-shot, checkpoint: 700, "
                                   "switch: 10}]"])
    out = tmp_path / "run"
    assert main(["run", str(tiny), "--out", str(out), "students.methods=[{name: two-shot, checkpoint: 700, switch: 10}]"]) == 2
    assert "checkpoint 700 is past the teacher's last step" in capsys.readouterr().err and not out.exists()


def test_one_number_is_a_list_of_one_seed(tiny):
    recipe = load_recipe(str(tiny), ["students.seeds=0", "students.sweep={switch: 10, seeds: 3}"])
    assert recipe.students.seeds == [0] and recipe.students.sweep.seeds == [3]


def test_a_recipe_file_without_a_name_is_named_after_the_file(tmp_path):
    path = tmp_path / "my-experiment.yaml"
    path.write_text("\n".join(line for line in TINY.splitlines() if not line.startswith("name:")))
    assert load_recipe(str(path)).name == "my-experiment"
    assert load_recipe(str(path), ["name=other"]).name == "other"
    assert load_recipe("parity-mlp-small").name == "parity-mlp-small"


def test_a_folder_named_like_a_shipped_recipe_does_not_hide_it(tmp_path, monkeypatch, capsys):
    """`cd runs; progdistill probe text-mlm-small` with a run folder `text-mlm-small` there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "parity-mlp-small").mkdir()
    (tmp_path / "not-a-recipe").mkdir()
    assert recipe_text("parity-mlp-small")[1] != str(tmp_path / "parity-mlp-small")
    assert "name: parity-mlp-small" in recipe_text("parity-mlp-small")[0]
    assert main(["recipes", "--show", "parity-mlp-small"]) == 0
    assert capsys.readouterr().out == recipe_text("parity-mlp-small")[0]
    with pytest.raises(RecipeError, match=r"^not-a-recipe: a folder, not a recipe file$"):
        recipe_text("not-a-recipe")


def test_a_file_named_like_a_shipped_recipe_does_not_hide_it_and_dot_slash_reads_it(tmp_path, monkeypatch):
    """`progdistill run parity-mlp-small > parity-mlp-small` leaves a log file of that name behind."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "parity-mlp-small").write_text("report: runs/x/report.md\n")
    assert recipe_text("parity-mlp-small")[1] == "parity-mlp-small"  # the shipped recipe
    assert "name: parity-mlp-small" in recipe_text("parity-mlp-small")[0]
    text, source = recipe_text("./parity-mlp-small")  # the file
    assert source == "parity-mlp-small" and text.startswith("report:")
    with pytest.raises(RecipeError, match=r"^parity-mlp-gpt: recipe file not found$"):
        recipe_text("./parity-mlp-gpt")  # a path, not a misspelt name


@pytest.mark.parametrize("command", ["run", "teacher", "probe", "distill", "report", "recipes", "grammar", "oracle",
                                     "export"])
def test_every_command_help_says_what_it_does(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    usage, description = out.split("\n\n")[:2]
    assert usage.startswith(f"usage: progdistill {command}") and len(description.split()) >= 4, out
    assert not description.startswith(("positional arguments:", "options:")), out


@pytest.mark.parametrize("drawn", [True, False])
def test_an_interruption_is_said_on_a_line_of_its_own(drawn, monkeypatch, capsys):
    """Ctrl-C during a progress bar: "interrupted" starts a line after the bar's `\r` line, and gets no
    blank line before it when no bar was drawn (the message is the whole of stderr); exit code 130."""
    from tqdm.auto import tqdm

    import progdistill.cli as cli

    def interrupted(args):
        if drawn:
            progress = tqdm(total=5, desc="teacher", leave=False)
            progress.update(2)
            progress.refresh()
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_recipes", interrupted)
    assert main(["recipes"]) == 130
    err = capsys.readouterr().err
    said = "interrupted; run the same command again to resume\n"
    if drawn:
        assert "2/5" in err.split("\n")[0] and err.endswith("\n" + said), repr(err)
    else:
        assert err == said


def test_sigterm_in_main_is_one_line_and_exit_143_and_the_handler_is_restored(monkeypatch, capsys):
    """SIGTERM while a command runs raises Terminated in the main thread (a `finally` inside the command
    runs); main says so on one line, returns 143 (128 + 15) and puts back the SIGTERM handler it found."""
    import os
    import signal
    import time

    import progdistill.cli as cli

    cleaned = []

    def terminated(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler interrupts this at once
        finally:
            cleaned.append(True)

    def mine(signum, frame):
        raise AssertionError("not expected")

    monkeypatch.setattr(cli, "cmd_recipes", terminated)
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        began = time.monotonic()
        assert main(["recipes"]) == 143
        assert time.monotonic() - began < 20 and cleaned == [True]
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err == "terminated; run the same command again to resume\n"


@pytest.mark.parametrize("bar", ["closed", "open"])
def test_an_error_after_a_progress_bar_starts_its_own_line(bar, monkeypatch, capsys):
    """A bar writes `\r` lines; the error after it (a bar closed on the way out, as group training's is, or
    one still open in a frame of the traceback, as the trainer's is) starts a line, so that `grep ^error:`
    finds it in a log of stderr."""
    from tqdm.auto import tqdm

    import progdistill.cli as cli

    def failing(args):
        progress = tqdm(total=5, desc="teacher", leave=False)
        try:
            progress.update(3)
            progress.refresh()
            raise RecipeError("teacher.steps: broken")
        finally:
            if bar == "closed":
                progress.close()

    monkeypatch.setattr(cli, "cmd_recipes", failing)
    assert main(["recipes"]) == 2
    err = capsys.readouterr().err
    lines = err.split("\n")
    assert "3/5" in lines[0]  # the bar was drawn
    assert [line for line in lines if "error" in line] == ["error: teacher.steps: broken"], repr(err)
    assert err.endswith("\n")
