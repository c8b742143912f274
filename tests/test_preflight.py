"""A run is planned before anything is written: probe options, a teacher.path trajectory's files and the
students' schedules over it, sizes that cannot fit; filesystem errors name the path (issue: reliability)."""

import errno
import json
import re
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from progdistill.cli import main
from progdistill.config import RecipeError, load_recipe
from progdistill.io import CheckpointError, OutputError
from progdistill.preflight import MAX_LAYERS, check_checkpoint_files, check_eval_size, check_sizes

TINY = ["task.d=8", "task.k=2", "task.eval_size=64", "teacher.steps=40", "teacher.checkpoint_every=20",
        "teacher.eval_every=10", "teacher.model.width=8", "students.model.width=8", "probe.monomials.samples=1000",
        "probe.monomials.off_support=3"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A finished tiny parity teacher folder (checkpoints 0, 20, 40)."""
    from progdistill.experiment import train_teacher

    out = tmp_path_factory.mktemp("run")
    train_teacher(load_recipe("parity-mlp-small", TINY), out, progress=False)
    return out / "teacher"


def _tree(root):
    """Every file under `root` with its bytes (a folder that does not exist: None)."""
    if not os.path.exists(root):
        return None
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(args, tmp_path, capsys, match):
    """Run the CLI's teacher stage; assert exit 2, one `error:` line matching `match`, no run folder."""
    out = tmp_path / "out"
    assert main(["teacher", "parity-mlp-small", *TINY, *args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert not out.exists()


@pytest.mark.parametrize("degrees", ["[-1]", "[50]", "[0, 1]", "[3]"])
def test_probe_degrees_outside_1_to_k_are_refused_before_writing(tmp_path, capsys, degrees):
    _refused([f"probe.monomials.degrees={degrees}"], tmp_path, capsys, r"probe\.monomials\.degrees: \[.*\] outside 1\.\.2")


def test_schedules_are_resolved_against_teacher_path_before_writing(teacher, tmp_path, capsys):
    _refused([f"teacher.path={teacher}", "students.methods=[{name: two-shot, checkpoint: 99999, switch: 10}]"],
             tmp_path, capsys, r"method 'two-shot': checkpoint 99999 is past the teacher's last saved step \(40\)")


def _copy(teacher, tmp_path):
    folder = tmp_path / "teacher"
    shutil.copytree(teacher, folder)
    return folder


def test_truncated_or_garbage_checkpoints_are_refused_before_writing(teacher, tmp_path, capsys):
    folder = _copy(teacher, tmp_path)
    file = folder / "checkpoint-20" / "model.safetensors"
    before = _tree(folder)
    file.write_bytes(file.read_bytes()[:-10])
    _refused([f"teacher.path={folder}"], tmp_path, capsys, rf"{file}: cannot read checkpoint \(truncated or not safetensors\?\)")
    file.write_bytes(b"\x80\x04garbage that is not safetensors")
    with pytest.raises(CheckpointError, match=rf"{file}: cannot read checkpoint"):
        check_checkpoint_files(folder, [0, 20, 40])
    assert before.keys() == _tree(folder).keys()


def test_a_trajectory_of_one_checkpoint_is_refused(teacher, tmp_path, capsys):
    folder = tmp_path / "teacher"
    folder.mkdir()
    shutil.copytree(teacher / "checkpoint-0", folder / "checkpoint-0")
    _refused([f"teacher.path={folder}"], tmp_path, capsys, r"a trajectory needs at least 2 checkpoints, found 1 "
                                                           r"\(checkpoint-0\)")


@pytest.mark.parametrize("dtype, name", [(torch.int8, "I8"), (torch.float64, "F64")])
def test_a_checkpoint_resaved_in_another_dtype_is_refused_not_cast(teacher, tmp_path, capsys, dtype, name):
    folder = _copy(teacher, tmp_path)
    file = folder / "checkpoint-40" / "model.safetensors"
    save_file({k: v.to(dtype) for k, v in load_file(file).items()}, file)
    _refused([f"teacher.path={folder}"], tmp_path, capsys, rf"{file}: tensors of dtype {name}; .*not cast silently")


@pytest.mark.parametrize("override, match", [
    ("teacher.model.width=1000000000", r"teacher\.model: 11,000,000,002 parameters need about .* GiB to train"),
    ("students.model.width=1000000000", r"students\.model: 11,000,000,002 parameters need about"),
    ("teacher.model.depth=1000000", rf"teacher\.model\.depth: 1,000,000 layers is beyond the limit of {MAX_LAYERS:,}"),
    ("teacher.steps=99999999999999999999999", r"teacher\.steps: 99,999,999,999,999,999,999,999 steps evaluated every 10 "
                                              r"is .* evaluations, beyond the limit"),
    ("students.steps=[99999999999999999999999]", r"students\.steps: budget 99,999,999,999,999,999,999,999"),
])
def test_sizes_that_cannot_fit_are_refused_with_the_key_and_estimate(tmp_path, capsys, override, match):
    _refused([override], tmp_path, capsys, match)


def test_checkpoints_that_cannot_fit_on_disk_are_refused(tmp_path):
    recipe = load_recipe("parity-mlp-small", [*TINY, "teacher.steps=1000000000000000000",
                                              "teacher.eval_every=1000000000000000000", "teacher.checkpoint_every=1"])
    with pytest.raises(RecipeError, match=r"teacher\.checkpoint_every: 1,000,000,000,000,000,000 steps saved every 1 "
                                          r"is about 1,000,000,000,000,000,002 checkpoints, beyond the limit"):
        check_sizes(recipe, {"input_dim": 8, "num_classes": 2}, tmp_path)
    recipe = load_recipe("parity-mlp-small", [*TINY, "teacher.steps=1000", "teacher.checkpoint_every=1"])
    with pytest.raises(RecipeError, match=r"about 1,002 checkpoints of 360 bytes, 352\.3 KiB in all, more than the "
                                          r"1\.0 KiB free under"):
        check_sizes(recipe, {"input_dim": 8, "num_classes": 2}, tmp_path, disk=1024)


def test_a_held_out_set_that_cannot_fit_is_refused():
    recipe = load_recipe("parity-mlp-small", ["task.eval_size=1000000000000"])
    with pytest.raises(RecipeError, match=r"task\.eval_size: 1,000,000,000,000 held-out examples need about .* TiB"):
        check_eval_size(recipe)
    check_eval_size(load_recipe("parity-mlp-small", ["task.eval_size=2000000"]), memory=10**12)  # fits


def test_grammar_sizes_beyond_the_limit_are_refused(capsys):
    assert main(["grammar", "show", "generate:levels=40,rhs_lengths=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mean length 2.199e+12 are about 2.199e+16 tokens, beyond the limit" in err


def test_filesystem_errors_name_the_path(tmp_path, capsys, monkeypatch):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("name: r\n")
    assert main(["report", str(recipe_file)]) == 2
    assert capsys.readouterr().err == f"error: report: {recipe_file} is not a run folder (it has no run.json)\n"
    assert main(["teacher", "parity-mlp-small", *TINY, "--out", str(recipe_file / "sub"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: cannot write {recipe_file}/sub: Not a directory\n"
    out = tmp_path / "ro"
    out.mkdir()
    real_open = os.open

    def read_only(path, *args, **kwargs):  # a read-only filesystem (chmod does not stop root)
        if str(path).startswith(str(out)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["teacher", "parity-mlp-small", *TINY, "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: cannot write {out}/.lock: Read-only file system\n"
    assert list(out.iterdir()) == []
    assert recipe_file.read_text() == "name: r\n"
    with pytest.raises(OutputError, match=r"^cannot write .*x\.json: Read-only file system$"):
        from progdistill.io import write_json
        write_json(out / "x.json", {})


@pytest.mark.parametrize("file, content, match", [
    ("checkpoint-40/meta.json", "[]", r"checkpoint-40/meta\.json: expected an object with a 'model' architecture"),
    ("checkpoint-40/meta.json", '{"model": 5}', r"checkpoint-40/meta\.json: expected an object with a 'model'"),
    ("checkpoint-20/meta.json", '{"model": {"type": "mlp", "input_dim": 8, "num_classes": 2}}',
     r"checkpoint-20/meta\.json: cannot rebuild its model: .*width"),
    ("curve.json", "[]", r"curve\.json: expected a non-empty list of evaluations, got list"),
    ("curve.json", '[{"step": 0, "loss": 1.0}]', r"curve\.json: entry 0 has no number 'accuracy'"),
])
def test_malformed_trajectory_metadata_is_refused_before_writing(teacher, tmp_path, capsys, file, content, match):
    folder = _copy(teacher, tmp_path)
    (folder / file).write_text(content)
    _refused([f"teacher.path={folder}"], tmp_path, capsys, match)


def test_too_few_teacher_evaluations_for_the_phases_are_refused_before_training(tmp_path, capsys):
    """Evaluations at 0, 20, 40; the first 5 % skipped leaves 2 (detect_phases needs 4) for a method that
    starts at the drop: refused before the teacher trains, not after."""
    _refused(["teacher.eval_every=20"], tmp_path, capsys,
             r"^error: parity-mlp-small: override teacher\.steps=40 teacher\.eval_every=20: teacher\.eval_every: "
             r"method 'progressive-from-drop' needs the teacher's phases, found from "
             r">= 4 evaluations after the first 5% of the run \(phases\.skip\); teacher\.steps=40 with "
             r"teacher\.eval_every=20 gives 2: lower teacher\.eval_every$")
    from progdistill.preflight import check_phase_evaluations

    check_phase_evaluations(load_recipe("parity-mlp-small", TINY))  # 10, 20, 30, 40: exactly 4
    check_phase_evaluations(load_recipe("parity-mlp-small", [*TINY, "teacher.eval_every=20",
                                                             "students.methods=[ce, one-shot]"]))  # no phases needed
    with pytest.raises(RecipeError, match="method 'auto' needs the teacher's phases"):
        check_phase_evaluations(load_recipe("parity-mlp-small", [*TINY, "teacher.eval_every=20",
                                                                 "students.methods=[ce, auto]"]))


def test_a_teacher_path_that_is_a_file_or_missing_says_which(tmp_path, capsys):
    file = tmp_path / "tfile"
    file.write_text("x")
    _refused([f"teacher.path={file}"], tmp_path, capsys, rf"teacher\.path {file}: a file, not a folder of checkpoints$")
    _refused([f"teacher.path={tmp_path / 'none'}"], tmp_path, capsys, r"teacher\.path .*none: no such folder$")


@pytest.mark.skipif(not os.path.exists("/proc/self"), reason="needs Linux's /proc")
def test_a_filesystem_without_a_size_is_not_reported_as_full(tmp_path, capsys):
    from progdistill.preflight import free_disk

    assert free_disk("/proc/1/x") is None and free_disk(tmp_path) > 0
    assert main(["teacher", "parity-mlp-small", *TINY, "--out", "/proc/1/x", "--quiet"]) == 2
    err = capsys.readouterr().err  # the reason is the system's (ENOENT as root, maybe EACCES otherwise)
    assert err.startswith("error: cannot write /proc/1/x: ") and err.count("\n") == 1 and "free" not in err


def test_a_damaged_teacher_curve_in_the_run_folder_is_refused_before_anything_is_rewritten(tmp_path, capsys):
    """A finished run whose teacher/curve.json was damaged: growing it (one more seed) or reporting it is
    refused with the file named, and run.json, config.yaml, teacher_phases.json stay as they were."""
    out = tmp_path / "out"
    # methods that need no phases: a 40-step teacher learns nothing, so it has no phase transition
    small = [*TINY, "students.steps=[20]", "students.seeds=[0]", "students.methods=[ce, one-shot, progressive]"]
    assert main(["run", "parity-mlp-small", *small, "--out", str(out), "--quiet"]) == 0
    (out / "teacher" / "curve.json").write_text('{"broken": 1}')
    before = _tree(out)
    message = f"error: {out}/teacher/curve.json: expected a non-empty list of evaluations, got dict\n"
    for argv in (["run", "parity-mlp-small", *small, "students.seeds=[0,1]", "--out", str(out), "--quiet"],
                 ["report", str(out)]):
        capsys.readouterr()
        assert main(argv) == 2
        assert capsys.readouterr().err == message
    assert _tree(out) == before


def test_phases_not_found_are_said_with_the_detectors_reason(tmp_path, capsys):
    """A teacher that never leaves chance has no phases: a method that needs them is refused naming why."""
    out = tmp_path / "run"
    assert main(["run", "parity-mlp-small", *TINY, "teacher.steps=200", "teacher.optim.lr=1e-12", "students.seeds=[0]",
                 "students.steps=20", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        "error: students: method 'progressive-from-drop': start 'drop_start' needs the teacher's phases, which were "
        "not detected ('accuracy' never rises: no phase transition to detect; "
        f"teacher_phases.json); the teacher is kept: `progdistill report {out}` says how to train other methods "
        "on it\n")
    assert not (out / "students").exists()


def test_a_refused_schedule_names_its_method_once(tmp_path, capsys):
    """`auto` without phases: the schedule's own message starts with the method, so the error does not say
    it twice; a labelled method is named by its label, then the schedule's message."""
    from progdistill.config import METHOD, validate_section
    from progdistill.preflight import schedule_error

    error = ValueError("method 'auto' needs the teacher's phases, which were not detected")
    plain, labelled = (validate_section(METHOD, m, "students.methods.0") for m in ({"name": "auto"},
                                                                                  {"name": "auto", "label": "late"}))
    assert schedule_error(plain, error) == "students: method 'auto' needs the teacher's phases, which were not detected"
    assert schedule_error(labelled, error) == ("students: method 'late': method 'auto' needs the teacher's phases, "
                                               "which were not detected")
    out = tmp_path / "run"
    assert main(["run", "parity-mlp-small", *TINY, "teacher.steps=200", "teacher.optim.lr=1e-12", "students.seeds=[0]",
                 "students.steps=20", "students.methods=[ce, auto]", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        "error: students: method 'auto' needs the teacher's phases, which were not detected ('accuracy' never rises: "
        f"no phase transition to detect; teacher_phases.json); the teacher is kept: `progdistill report {out}` says "
        "how to train other methods on it\n")


@pytest.mark.parametrize("damage", ["truncated result", "result not an object", "truncated curve"])
def test_a_damaged_student_result_is_refused_before_any_file_is_rewritten(damage, tmp_path, capsys):
    """A finished run whose student result.json or curve.json was damaged: the resume is refused in one
    line naming the file and the way out, and no file of the folder changes (bytes and times)."""
    out = tmp_path / "out"
    small = [*TINY, "students.steps=[20]", "students.seeds=[0]", "students.methods=[ce, one-shot]"]
    assert main(["run", "parity-mlp-small", *small, "--out", str(out), "--quiet"]) == 0
    folder = out / "students" / "one-shot" / "budget-20" / "seed-0"
    name, text = {"truncated result": ("result.json", '{"label": "one'), "result not an object": ("result.json", "[]"),
                  "truncated curve": ("curve.json", '[{"step": 0')}[damage]
    (folder / name).write_text(text)
    for p in out.rglob("*"):
        os.utime(p, (1_000_000_000, 1_000_000_000))
    before = _tree(out), {str(p): p.stat().st_mtime for p in out.rglob("*")}
    capsys.readouterr()
    assert main(["run", "parity-mlp-small", *small, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder / name}: ") and err.endswith(
        "; delete that student's folder to train it again\n") and err.count("\n") == 1, err
    assert (_tree(out), {str(p): p.stat().st_mtime for p in out.rglob("*")}) == before
    shutil.rmtree(folder)  # the way out the error names
    assert main(["run", "parity-mlp-small", *small, "--out", str(out), "--quiet"]) == 0
    assert json.loads((folder / "result.json").read_text())["label"] == "one-shot"


def test_a_run_of_other_methods_names_them_and_how_to_reuse_its_teacher(tmp_path, capsys):
    """Another list of methods on a finished run: refused naming the methods by label (not every key of
    each), with the way to reuse the finished teacher, which works; another teacher gets no such hint."""
    out, new = tmp_path / "out", tmp_path / "new"
    small = [*TINY, "students.steps=[20]", "students.seeds=[0]"]
    assert main(["run", "parity-mlp-small", *small, "students.methods=[ce, one-shot]", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", "parity-mlp-small", *small, "students.methods=[ce]", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"error: {out} holds a run of a different config (students.methods: [ce, one-shot] -> [ce]); choose another "
        f"--out or delete it, or reuse its teacher in a new folder: teacher.path={out / 'teacher'} --out NEW\n")
    assert main(["run", "parity-mlp-small", *small, "students.methods=[ce]", f"teacher.path={out / 'teacher'}",
                 "--out", str(new), "--quiet"]) == 0
    assert (new / "students" / "ce" / "budget-20" / "seed-0" / "result.json").is_file()
    capsys.readouterr()
    assert main(["run", "parity-mlp-small", *small, "students.methods=[ce, one-shot]", "teacher.steps=60",
                 "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (f"error: {out} holds a run of a different config (teacher.steps: 40 -> 60); "
                                       "choose another --out or delete it\n")


@pytest.mark.parametrize("cores, threads, refused", [(2, 9, True), (2, 8, False), (1, 5, True), (1, 4, False),
                                                     (2, 100000, True)])
def test_threads_beyond_four_per_core_are_refused_before_writing(tmp_path, capsys, monkeypatch, cores, threads,
                                                                  refused):
    """More than 4 torch threads per core only slows PyTorch down, and tens of thousands crash OpenMP
    (a segfault): refused, naming the cores, before any file is written."""
    from progdistill.preflight import check_threads

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if refused:
        _refused([f"threads={threads}"], tmp_path, capsys, "^" + re.escape(
            f"error: parity-mlp-small: override threads={threads}: threads: {threads} is more than 4x this "
            f"machine's {cores} core{'s' if cores > 1 else ''} (more threads than cores only slow PyTorch down)\n") + "$")
    else:
        check_threads(load_recipe("parity-mlp-small", [f"threads={threads}"]))


def test_the_shipped_recipes_run_on_a_machine_of_one_core(monkeypatch):
    from progdistill.config import recipe_names
    from progdistill.preflight import check_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    for name in recipe_names():
        check_threads(load_recipe(name))
