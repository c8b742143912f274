import json
import re
import textwrap

import pytest
import torch

from progdistill.cli import main
from progdistill.config import RecipeError, load_recipe, recipe_names

TINY = textwrap.dedent("""
    name: tiny
    threads: 1
    task: {name: parity, d: 12, k: 2, eval_size: 256}
    teacher:
      model: {type: mlp, width: 64}
      steps: 600
      batch_size: 16
      optim: {lr: 0.1}
      eval_every: 25
      checkpoint_every: 50
    phases: {metric: accuracy}
    probe:
      monomials: {samples: 4096, off_support: 5}
    students:
      model: {type: mlp, width: 16}
      steps: 300
      batch_size: 16
      optim: {lr: 0.1}
      eval_every: 25
      seeds: [0, 1]
      methods:
        - ce
        - one-shot
        - progressive
        - {name: two-shot, checkpoint: middle, switch: 100}
        - adaptive
        - auto
    report: {target: 0.9}
""")


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_shipped_recipes_validate():
    names = recipe_names()
    assert {"parity-mlp-small", "parity-gpt-small", "parity-mlp-paper", "parity-gpt-paper", "parity-spike"} <= set(names)
    for name in names:
        assert load_recipe(name).name == name


@pytest.mark.parametrize("override, message", [
    ("teacher.stepz=3", "teacher.stepz: unknown key"),
    ("teacher.steps=many", "teacher.steps: Input should be a valid integer"),
    ("task.k=20", "does not fit in d=12"),
    ("students.methods=[{name: two-shot}]", "switch"),
    ("students.methods=[ce, ce]", "distinct labels"),
    ("students.methods.0.speed=2", "speed: unknown key"),
    ("students.kd.kind=reverse", "reverse KL needs tau > 0"),
    ("nonsense", "key=value"),
    ("device=gpu", "not a device progdistill runs on"),
    ("students.steps=[]", "students.steps: List should have at least 1 item"),
    ("students.steps=[100, 0]", "students.steps.1: Input should be greater than or equal to 1"),
    ("students.seeds=[0, 0]", "seeds must be distinct"),
    ("students.methods=[{nme: ce}]", "students.methods.0: needs a 'name' key$"),
    ("students.methods=[{name:ce}]", "a space after each colon"),
    ("probe.nonterminal={}", "probe.nonterminal: not available for task 'parity' \\(it has: \\['monomials'\\]\\)"),
    ("students.probe_final=[ngram]", "students.probe_final: probe 'ngram' is not configured under probe:"),
    ("precision=fp16", "precision: Input should be 'fp32' or 'bf16'"),
    ("teacher.seed=1000", "teacher.seed 1000: student seed 0 would train on the teacher's own data"),
])
def test_bad_recipes_give_clear_errors(tiny, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(str(tiny), [override])


@pytest.mark.parametrize("recipe", ["parity-mlp-small", "pcfg-mlm-small", "pcfg-ar-small"])
def test_probes_known_to_validation_are_the_tasks_own(recipe):
    from progdistill.config import TASK_PROBES
    from progdistill.tasks import build_task

    r = load_recipe(recipe, ["task.eval_size=8"])
    assert set(TASK_PROBES[r.task.name]) == set(build_task(r.task).probes())


def test_overrides_and_unknown_recipe(tiny):
    r = load_recipe(str(tiny), ["students.methods.2.speed=2", "students.steps=[100, 200]"])
    assert r.students.methods[2].speed == 2 and r.students.steps == [100, 200]
    with pytest.raises(RecipeError, match=r"^unknown recipe 'no-such-recipe'; shipped recipes: parity-gpt-paper, "):
        load_recipe("no-such-recipe")
    with pytest.raises(RecipeError, match=r"^unknown recipe 'parity-mlp-smal' \(did you mean 'parity-mlp-small'\?\); "):
        load_recipe("parity-mlp-smal")


def test_cli_reports_errors_without_traceback(tiny, tmp_path, capsys):
    assert main(["run", str(tiny), "--out", str(tmp_path / "x"), "teacher.bogus=1"]) == 2
    assert "teacher.bogus: unknown key" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["run", str(tiny), "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a run folder" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    (mine / ".lock").write_text("")  # what a run killed before its run.json leaves is no reason to refuse
    (mine / ".gitkeep").write_text("")  # nor a placeholder that keeps an empty folder in git
    assert main(["run", str(tiny), "--out", str(mine)]) == 2
    assert capsys.readouterr().err == (f"error: --out {mine} is not a run folder (no run.json) and holds other files "
                                       "(notes.txt); choose a new or empty folder\n")
    assert sorted(p.name for p in mine.iterdir()) == [".gitkeep", ".lock", "notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep"
    with pytest.raises(SystemExit):
        main(["grammar", "sample", str(tiny), "-n", "-3"])
    assert "must be a positive integer, got '-3'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has the device")
def test_an_unavailable_device_is_refused_before_anything_is_written(tiny, tmp_path, capsys):
    """The error names the recipe, the override that set the device (not the others) and the key, as a
    validation error does; without an override, the recipe file."""
    out = tmp_path / "x"
    assert main(["run", str(tiny), "--out", str(out), "teacher.steps=700", "device=cuda:7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tiny}: override device=cuda:7: device: 'cuda:7' is not available: ") and \
        err.count("\n") == 1, err
    assert not out.exists()
    tiny.write_text(TINY + "device: cuda:7\n")
    assert main(["run", str(tiny), "--out", str(out), "teacher.steps=700"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tiny}: device: 'cuda:7' is not available: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_precision_reaches_teacher_and_students(tiny, tmp_path):
    small = ["--quiet", "teacher.steps=100", "students.steps=50", "students.methods=[one-shot]", "students.seeds=[0]"]
    curves = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert main(["run", str(tiny), "--out", str(out), f"precision={precision}", *small]) == 0
        curves[precision] = [json.loads((out / path).read_text()) for path in
                             ("teacher/curve.json", "students/one-shot/budget-50/seed-0/curve.json")]
    for fp32, bf16 in zip(curves["fp32"], curves["bf16"]):
        assert [p["loss"] for p in fp32] != [p["loss"] for p in bf16]


def test_a_teacher_trained_for_another_task_or_interrupted_is_refused(tiny, tmp_path, capsys):
    small = ["--quiet", "teacher.steps=50", "students.steps=20", "students.methods=[one-shot]", "students.seeds=[0]"]
    assert main(["teacher", str(tiny), "--out", str(tmp_path / "a"), *small]) == 0
    teacher = f"teacher.path={tmp_path / 'a' / 'teacher'}"
    assert main(["run", str(tiny), "--out", str(tmp_path / "b"), teacher, "task.d=10", *small]) == 2
    assert "not trained for this task (input_dim 12 (the task needs 10))" in capsys.readouterr().err
    assert main(["run", str(tiny), "--out", str(tmp_path / "c"), teacher, *small]) == 0
    (tmp_path / "a" / "teacher" / "state").mkdir()  # what an interrupted teacher training leaves: its state,
    (tmp_path / "a" / "teacher" / "curve.json").unlink()  # and no curve.json (written last)
    assert main(["run", str(tiny), "--out", str(tmp_path / "d"), teacher, *small]) == 2
    assert "this teacher's training was interrupted" in capsys.readouterr().err


def test_probes_of_a_saved_teacher_are_reused_only_when_they_would_be_the_same(tiny, tmp_path, monkeypatch):
    import progdistill.probes.monomials as monomials

    calls = []
    real = monomials.monomial_probe
    monkeypatch.setattr(monomials, "monomial_probe", lambda *a, **k: calls.append(1) or real(*a, **k))
    small = ["--quiet", "teacher.steps=100", "students.steps=20", "students.methods=[one-shot]", "students.seeds=[0]"]
    assert main(["probe", str(tiny), "--out", str(tmp_path / "a"), *small]) == 0
    probed = len(calls)
    assert probed > 0
    source = (tmp_path / "a" / "probes" / "teacher_monomials.json").read_text()
    teacher = f"teacher.path={tmp_path / 'a' / 'teacher'}"
    assert main(["run", str(tiny), "--out", str(tmp_path / "b"), teacher, *small]) == 0
    assert len(calls) == probed  # same task, probe and device: reused, not recomputed
    assert (tmp_path / "b" / "probes" / "teacher_monomials.json").read_text() == source
    assert main(["probe", str(tiny), "--out", str(tmp_path / "c"), teacher, "probe.monomials.samples=2048", *small]) == 0
    assert len(calls) == 2 * probed  # other probe settings: recomputed
    assert (tmp_path / "c" / "probes" / "teacher_monomials.json").read_text() != source


def test_a_checkpoint_the_teacher_never_saved_is_refused_before_any_student(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    small = ["--quiet", "teacher.steps=100", "students.steps=20", "students.seeds=[0]"]
    assert main(["teacher", str(tiny), "--out", str(tmp_path / "a"), *small]) == 0
    saved = f"teacher.path={tmp_path / 'a' / 'teacher'}"  # a saved teacher: its trajectory decides, at run time
    assert main(["run", str(tiny), "--out", str(out), *small, saved,
                 "students.methods=[ce, {name: two-shot, checkpoint: 12345, switch: 10}]"]) == 2
    assert "method 'two-shot': checkpoint 12345 is past the teacher's last saved step (100)" in capsys.readouterr().err
    assert not (out / "students").exists()


def test_end_to_end_run_report_and_resume(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"ce", "one-shot", "progressive", "two-shot", "adaptive", "auto"}
    for entry in summary["methods"].values():
        seeds = entry["budgets"]["300"]["seeds"]
        assert set(seeds) == {"0", "1"}
        for r in seeds.values():
            assert 0 <= r["final_accuracy"] <= 1
            assert r["samples_to_target"] is None or r["samples_to_target"] % 16 == 0
    assert summary["teacher"]["curve"][-1]["accuracy"] > 0.9 and summary["teacher"]["loss_spikes"] == []
    assert summary["teacher"]["auto_checkpoint"]["middle"] in summary["teacher"]["checkpoints"]
    report = (out / "report.md").read_text()
    assert "| 300 | `progressive` |" in report and "degree-1 in-support" in report
    for png in ("teacher.png", "students.png", "monomials.png"):
        assert (out / "plots" / png).stat().st_size > 10_000
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["task"]["d"] == 12 and "torch" in run["environment"]
    # every student logs which checkpoint supervised each step
    sup = json.loads((out / "students/progressive/budget-300/seed-0/supervision.json").read_text())
    assert sup[0]["start"] == 0 and sup[-1]["end"] == 300 and len(sup) > 1
    # a second run finds everything done and reproduces the same summary
    before = (out / "summary.json").read_text()
    assert main(["run", str(tiny), "--out", str(out), "--quiet"]) == 0
    assert (out / "summary.json").read_text() == before
    # a different config in the same folder is refused
    assert main(["run", str(tiny), "--out", str(out), "--quiet", "students.seeds=[5]"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "students.seeds: [0, 1] -> [5]" in err
    # one that only adds a method grows the run: the students already there are kept as they are
    kept = (out / "students/ce/budget-300/seed-0/result.json").stat().st_mtime_ns
    methods = "students.methods=[ce, one-shot, progressive, {name: two-shot, checkpoint: middle, switch: 100}, " \
              "adaptive, auto, {name: two-shot, checkpoint: before, switch: 100, label: early}]"
    assert main(["run", str(tiny), "--out", str(out), "--quiet", methods]) == 0
    assert (out / "students/ce/budget-300/seed-0/result.json").stat().st_mtime_ns == kept  # not trained again
    grown = json.loads((out / "summary.json").read_text())
    assert set(grown["methods"]["early"]["budgets"]["300"]["seeds"]) == {"0", "1"}
    assert grown["methods"]["ce"] == json.loads(before)["methods"]["ce"]


def test_report_of_a_run_folder_before_its_students(tiny, tmp_path):
    out = tmp_path / "run"
    assert main(["probe", str(tiny), "--out", str(out), "--quiet"]) == 0
    assert main(["report", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == {} and summary["teacher"]["phases"] is not None
    report = (out / "report.md").read_text()
    assert "No student has finished yet" in report and "degree-1 in-support" in report
    assert not (out / "plots" / "students.png").exists()
    flat = tmp_path / "flat"  # phases looked for only in the last 1% of the curve: too few points
    assert main(["probe", str(tiny), "--out", str(flat), "--quiet", "phases.skip=0.99"]) == 2  # its methods need them
    assert not flat.exists()
    assert main(["probe", str(tiny), "--out", str(flat), "--quiet", "phases.skip=0.99",
                 "students.methods=[ce, one-shot]"]) == 0
    assert main(["report", str(flat)]) == 0
    error = json.loads((flat / "summary.json").read_text())["teacher"]["phases_error"]
    assert error.startswith("need >= 4 finite points") and f"**No phase transition detected** ({error})" in \
        (flat / "report.md").read_text()


def test_report_refuses_a_run_folder_without_a_finished_teacher(tiny, tmp_path, capsys):
    from progdistill.experiment import prepare_run

    out = prepare_run(load_recipe(str(tiny)), tmp_path / "run")
    assert main(["report", str(out)]) == 2
    assert "teacher has not finished" in capsys.readouterr().err
    assert not (out / "teacher").exists()


def test_sweep_table_shows_median_range_and_mean_with_standard_error():
    from progdistill.report.tables import sweep_table, sweep_text

    sweep = [{"checkpoint": 100, "seeds": [0, 1, 2], "final_accuracies": [0.60, 0.70, 0.80],
              "median_final_accuracy": 0.70},
             {"checkpoint": 200, "seeds": [0], "final_accuracies": [0.75], "median_final_accuracy": 0.75}]
    summary = {"sweep": sweep, "teacher": {"curve": [{"step": 100, "accuracy": 0.6}, {"step": 200, "accuracy": 0.9}]},
               "sweep_best": {"checkpoint": 200, "median_final_accuracy": 0.75, "overlapping": [100]}}
    _, rows = sweep_table(summary)
    assert rows[0] == ["100", "0.600", "0.7000 [0.6000–0.8000]", "0.7000 ± 0.0577"]  # s.d. 0.1 / sqrt(3)
    assert rows[1] == ["200", "0.900", "0.7500 [0.7500–0.7500]", "0.7500"]
    assert sweep_text(summary) == "Best T: 200. Other T whose best seed reaches the best T's worst seed: 100."


@pytest.mark.parametrize("reached, text", [([None, None, 1600], "≥ 4,800"), ([3200, None, 1600], "3,200")])
def test_median_samples_to_target_is_marked_when_only_a_lower_bound(tmp_path, reached, text):
    from progdistill.experiment import _method_summary
    from progdistill.layout import samples_to_target_text, student_folder
    from progdistill.io import write_json

    for seed, samples in enumerate(reached):
        write_json(student_folder(tmp_path, "ce", 300, seed) / "result.json",
                   {"final_accuracy": 0.5, "samples_to_target": samples})
    entry = _method_summary(tmp_path, "ce", 300, [0, 1, 2], batch_size=16, target=0.95)  # no curve.json: as stored
    assert samples_to_target_text(entry) == text
    assert entry["reached_target"] == sum(s is not None for s in reached)


def test_a_run_folder_of_an_older_version_is_the_same_recipe(tiny, tmp_path):
    from progdistill.experiment import prepare_run

    recipe = load_recipe(str(tiny))
    out = prepare_run(recipe, tmp_path / "run")
    run = json.loads((out / "run.json").read_text())
    methods = run["config"]["students"]["methods"]
    assert sum(m.pop("reach", None) is not None for m in methods) >= 1  # a key added later, at its default
    run["config_hash"], run["config"]["description"] = "older-version", "older words"
    (out / "run.json").write_text(json.dumps(run))
    prepare_run(recipe, out)  # read by this version it is the same experiment: accepted, run.json updated
    assert json.loads((out / "run.json").read_text())["config_hash"] != "older-version"
    run["config"]["students"]["seeds"] = [7]
    (out / "run.json").write_text(json.dumps(run))
    with pytest.raises(RecipeError, match=r"students.seeds: \[7\] -> \[0, 1\]"):
        prepare_run(recipe, out)
    (out / "run.json").write_text(json.dumps({"config_hash": "x", "config": {"name": "tiny"}}))
    with pytest.raises(RecipeError, match=r"different config .*students: '\(absent\)' -> "):
        prepare_run(recipe, out)  # a config this version cannot read is never grown from


@pytest.mark.parametrize("overrides, grows", [
    (["students.seeds=[0, 1, 2]", "students.steps=[300, 400]"], True),
    (["students.methods=[ce, one-shot, progressive, {name: two-shot, checkpoint: middle, switch: 100}, adaptive, "
      "auto, {name: progressive, speed: 0.5, label: slow}]"], True),
    (["students.sweep={switch: 100, seeds: [0]}"], True),  # a sweep added
    (["students.seeds=[1, 2]"], False),  # seed 0's students would no longer be described
    (["students.methods.3.switch=150"], False),  # the two-shot students in the folder used 100
    (["students.optim.lr=0.2"], False),
    (["teacher.steps=700"], False),
])
def test_a_run_folder_accepts_a_config_that_only_adds_students(tiny, tmp_path, overrides, grows):
    from progdistill.experiment import prepare_run

    out = prepare_run(load_recipe(str(tiny)), tmp_path / "run")
    if grows:
        prepare_run(load_recipe(str(tiny), overrides), out)
        assert json.loads((out / "run.json").read_text())["config"] == load_recipe(str(tiny), overrides).model_dump(mode="json")
    else:
        with pytest.raises(RecipeError, match="different config"):
            prepare_run(load_recipe(str(tiny), overrides), out)


def test_a_sweep_grows_only_by_seeds_and_checkpoints(tiny, tmp_path):
    from progdistill.experiment import prepare_run

    sweep = "students.sweep={switch: 100, budget: 300, seeds: [0], checkpoints: [100, 200]}"
    out = prepare_run(load_recipe(str(tiny), [sweep]), tmp_path / "run")
    for grown in ("{switch: 100, budget: 300, seeds: [0, 1], checkpoints: [100, 150, 200]}",
                  "{switch: 100, seeds: [0, 1]}"):  # every saved checkpoint; budget defaults to the first, 300
        prepare_run(load_recipe(str(tiny), [f"students.sweep={grown}"]), out)
    for changed in ("{switch: 150, seeds: [0, 1]}", "{switch: 100, budget: 200, seeds: [0, 1]}", sweep[15:], "null"):
        with pytest.raises(RecipeError, match="different config"):
            prepare_run(load_recipe(str(tiny), [f"students.sweep={changed}"]), out)


def test_sweep_best_places_the_best_checkpoint_against_the_drop_and_auto():
    from progdistill.experiment import sweep_best
    from progdistill.trajectory import Phases

    sweep = [{"checkpoint": t, "seeds": [0, 1, 2], "final_accuracies": accs, "median_final_accuracy": sorted(accs)[1]}
             for t, accs in ((100, [0.60, 0.61, 0.62]), (200, [0.70, 0.66, 0.64]), (300, [0.69, 0.72, 0.70]),
                             (400, [0.65, 0.66, 0.67]))]
    phases = Phases(drop_start=150, drop_end=250, middle=200, metric="loss")
    best = sweep_best(sweep, [0, 100, 200, 300, 400], phases, {"before": 100, "middle": 200, "after": 300})
    assert best == {"checkpoint": 300, "median_final_accuracy": 0.70, "best_on_seeds": 2, "seeds_compared": 3,
                    "overlapping": [200], "phase": "after the drop",
                    "best_inside_drop": {"checkpoint": 200, "median_final_accuracy": 0.66},
                    "auto": 200, "checkpoints_from_auto": 1}
    assert sweep_best(sweep[:2], [0, 100, 200], None, None) == {
        "checkpoint": 200, "median_final_accuracy": 0.66, "best_on_seeds": 3, "seeds_compared": 3,
        "overlapping": []}
    sweep[3]["seeds"], sweep[3]["final_accuracies"] = [2, 3], [0.80, 0.50]  # seed 2 is the only common one
    best = sweep_best(sweep, [0, 100, 200, 300, 400], phases, None)
    assert (best["checkpoint"], best["best_on_seeds"], best["seeds_compared"]) == (300, 0, 1)


@pytest.mark.parametrize("override, message", [
    ("teacher.stpes=3", "teacher.stpes: unknown key (did you mean 'steps'?)"),
    ("students.methods=[{name: progressive, sped: 2}]", "students.methods.0.sped: unknown key (did you mean 'speed'?)"),
    ("tsk.d=3", "tsk: unknown key (did you mean 'task'?)"),
    ("teacher.zzz=1", "teacher.zzz: unknown key"),
])
def test_a_misspelt_key_names_the_closest_key_of_its_section(override, message):
    with pytest.raises(RecipeError, match=re.escape(f"parity-mlp-small: override {override}: {message}") + "$"):
        load_recipe("parity-mlp-small", [override])


@pytest.mark.parametrize("override, message", [
    ("task.name=pcfg-mlm", "task.grammar: Field required; task.d: unknown key for name: pcfg-mlm (a key for name: "
                           "parity); task.k: unknown key for name: pcfg-mlm (a key for name: parity)"),
    ("teacher.model.type=gpt", "teacher.model.width: unknown key for type: gpt (a key for type: mlp)"),
    ("task.grammar=3", "task.grammar: unknown key for name: parity (a key for name: pcfg-mlm or pcfg-ar)"),
    ("students.methods=[{name: ce, speed: 2}]", "students.methods.0.speed: unknown key for name: ce (a key for name: "
                                                "progressive)"),
    ("teacher.model.widht=3", "teacher.model.widht: unknown key (did you mean 'width'?)"),
])
def test_a_key_of_another_variant_of_its_section_is_said_to_be_one(override, message, tmp_path, capsys):
    """A section whose `name` / `type` changed keeps the keys of the old one: they are not suggested as
    their own spelling ("task.d: unknown key (did you mean 'd'?)") but said to belong to the other variant."""
    out = tmp_path / "run"
    assert main(["run", "parity-mlp-small", "--out", str(out), override]) == 2
    assert capsys.readouterr().err == f"error: parity-mlp-small: override {override}: {message}\n"
    assert not out.exists()


@pytest.mark.parametrize("override, message", [
    ("students.methods=[{name: progressive, start: x}]",
     "students.methods.0.start: Input should be a valid integer, unable to parse string as an integer or Input "
     "should be 'before', 'drop_start', 'middle', 'drop_end', 'after' or 'final'"),
    ("students.methods=[{name: two-shot, checkpoint: [1], switch: 3}]",
     "students.methods.0.checkpoint: Input should be a valid integer or Input should be 'before', 'drop_start', "
     "'middle', 'drop_end', 'after' or 'final'"),
    ("teacher.path=3", "teacher.path: Input should be a valid string or Input should be a valid list"),
    ("teacher.path=[a,[2]]", "teacher.path: Input should be a valid string; teacher.path.1: Input should be a valid "
                             "string"),
    ("students.methods=[{name: progressive, speed: x}]", "students.methods.0.speed: Input should be a valid number, "
                                                         "unable to parse string as a number or Input should be 'fit'"),
    ("students.steps=[300,x]", "students.steps.1: Input should be a valid integer, unable to parse string as an integer"),
])
def test_an_error_names_the_key_without_pydantics_type_labels(override, message, tmp_path, capsys):
    """A union's members are tried in turn and pydantic labels each location with the member
    ('start.int', 'path.list[str].0'); the user's key is the one written, each member's message joined by 'or'."""
    out = tmp_path / "run"
    assert main(["run", "parity-mlp-small", "--out", str(out), override]) == 2
    assert capsys.readouterr().err == f"error: parity-mlp-small: override {override}: {message}\n"
    assert not out.exists()


@pytest.mark.parametrize("override, message", [
    ("students.methods.20.speed=2", "override 'students.methods.20.speed': '20' is not an index of a list of 8 (0 to 7)"),
    ("students.seeds.5=3", "override 'students.seeds.5': '5' is not an index of a list of 3 (0 to 2; set the whole "
                           "list to add entries)"),
    ("name.x=1", "override 'name.x': cannot set 'x'"),
])
def test_an_override_past_a_list_says_how_long_the_list_is(override, message):
    with pytest.raises(RecipeError, match=f"^parity-mlp-small: {re.escape(message)}$"):
        load_recipe("parity-mlp-small", [override])


def test_a_finished_run_is_scored_anew_under_another_target(tiny, tmp_path):
    """report.target is not part of the experiment: the same folder re-reports with the new target, the
    students are not trained again, and samples_to_target comes from each student's curve."""
    out = tmp_path / "run"
    assert main(["run", str(tiny), "--out", str(out), "--quiet"]) == 0
    results = sorted((out / "students").rglob("result.json"))
    before = {p: p.read_bytes() for p in results}
    assert main(["run", str(tiny), "--out", str(out), "--quiet", "report.target=0.5"]) == 0
    assert {p: p.read_bytes() for p in results} == before  # nothing retrained
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"] == 0.5
    checked = 0
    for label, entry in summary["methods"].items():
        for budget, b in entry["budgets"].items():
            for seed, r in b["seeds"].items():
                curve = json.loads((out / "students" / label / f"budget-{budget}" / f"seed-{seed}" / "curve.json")
                                   .read_text())
                first = next((p for p in curve if p["accuracy"] >= 0.5), None)
                assert r["samples_to_target"] == (first["samples"] if first else None)
                checked += first is not None
    assert checked > 0  # the lower target is reached somewhere, so the test compares numbers


def test_an_error_names_the_override_at_fault_or_else_the_file(tmp_path):
    with pytest.raises(RecipeError, match=r"^parity-mlp-small: override teacher\.steps=0: teacher\.steps: Input should be "
                                          r"greater than or equal to 1$"):
        load_recipe("parity-mlp-small", ["students.seeds=[0]", "teacher.steps=0"])
    broken = tmp_path / "broken.yaml"
    broken.write_text(load_recipe("parity-mlp-small").model_dump_json().replace('"steps":10000', '"steps":-5', 1))
    with pytest.raises(RecipeError, match=r"broken\.yaml: invalid recipe: teacher\.steps: Input should be"):
        load_recipe(str(broken), ["students.seeds=[0]"])  # the file is at fault, not the override


@pytest.mark.parametrize("override, message", [
    ("students.seeds=[0,1", "not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ("teacher.steps=!!python/name:os.system", "YAML tag !!python/name:os.system is not allowed (recipes are plain data)"),
])
def test_an_override_that_is_not_yaml_names_the_recipe_and_the_value_typed(override, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "parity-mlp-small", "--out", str(out), override]) == 2
    assert capsys.readouterr().err == f"error: parity-mlp-small: override {override}: {message}\n"
    assert not out.exists()


def test_probe_inputs_beyond_memory_name_the_override_and_the_sizes_that_multiply(tmp_path, capsys):
    """100,000 probe inputs x 10^8 signs x 4 bytes = 4e13 bytes = 36.4 TiB: the override that made it so is
    named (not the other one), and so are the two keys whose sizes multiply."""
    out = tmp_path / "run"
    assert main(["run", "parity-mlp-small", "--out", str(out), "students.seeds=[3]", "task.d=100000000"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: parity-mlp-small: override task\.d=100000000: probe\.monomials\.samples x task\.d: "
                        r"100,000 inputs of 100,000,000 signs need about 36\.4 TiB, more than the [\d.,]+ [KMG]iB of "
                        r"memory available\n", err), err
    assert not out.exists()


@pytest.mark.parametrize("override, key", [
    ("students.seeds=[-1]", "students.seeds.0"), ("students.seeds=-1", "students.seeds.0"),
    ("teacher.seed=-3", "teacher.seed"), ("students.sweep={switch: 1, seeds: [0, -2]}", "students.sweep.seeds.1"),
    ("task.seed=-1", "task.seed"), ("probe.monomials.seed=-1", "probe.monomials.seed"),
])
def test_a_negative_seed_is_refused_before_anything_is_written(tmp_path, capsys, override, key):
    """A negative seed trained into seed--1 folders; it is a validation error naming the key."""
    out = tmp_path / "x"
    assert main(["run", "parity-mlp-small", "--out", str(out), override]) == 2
    assert capsys.readouterr().err == (f"error: parity-mlp-small: override {override}: {key}: Input should be "
                                       "greater than or equal to 0\n")
    assert not out.exists()


def test_every_seed_key_documents_its_bound(capsys):
    from progdistill.recipe_keys import recipe_keys

    seeds = {k.path: k.type for k in recipe_keys() if k.path.rsplit(".", 1)[-1] in ("seed", "seeds")}
    assert {"task.seed", "teacher.seed", "students.seeds", "students.sweep.seeds", "probe.monomials.seed"} <= set(seeds)
    assert {path: type_ for path, type_ in seeds.items() if "≥ 0" not in type_} == {}
    assert main(["recipes", "--keys", "students.seeds"]) == 0
    assert capsys.readouterr().out.startswith("students.seeds\n    list of int ≥ 0 (length ≥ 1); default required\n")


def test_the_cuda_message_points_to_the_readme_section_that_says_how_to_install_cuda_pytorch(monkeypatch):
    """The message names a README section by its heading, and that section says how to install a CUDA build."""
    from pathlib import Path

    from progdistill.experiment import require_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RecipeError, match=r"install a CUDA build of PyTorch \(README, section \"([^\"]+)\"\)$") as e:
        require_device("cuda")
    heading = re.search(r'section "([^"]+)"', str(e.value)).group(1)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    sections = dict(re.findall(r"^## (.+)\n((?:(?!^## ).*\n)*)", readme, flags=re.M))
    assert heading in sections, sorted(sections)
    assert "install the CUDA build of PyTorch" in sections[heading]
