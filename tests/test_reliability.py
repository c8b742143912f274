"""Bad input is refused with one line naming the problem; files are written safely (issue: reliability)."""

import json
import os
import shutil
import stat

import pytest

from progdistill.cli import main, one_line
from tiny import parity_workers  # noqa: E402
from progdistill.config import RecipeError, load_recipe
from progdistill.grammar import parse_grammar, sample_sentences_recursive
from progdistill.io import OutputError, remove_stale_temporaries, write_json, write_text


@pytest.mark.parametrize("override, match", [
    ("teacher.steps=[1,", r"^parity-mlp-small: override teacher\.steps=\[1,: not valid YAML: expected"),
    ("teacher.steps=!!python/object/apply:os.system ['touch MARKER']", r"YAML tag !!python/object/apply:os\.system"),
    ("teacher.steps=true", r"teacher\.steps: expected a number, got a boolean"),
    ("students.kd.alpha=true", r"students\.kd\.alpha: expected a number, got a boolean"),
    ("students.steps=[100, false]", r"students\.steps: expected a number, got a boolean"),
    ("students.methods.2.speed=.inf", r"students\.methods\.2\.speed: Input should be a finite number"),
    ("teacher.optim.betas=[0.9, 1.0]", r"teacher\.optim\.betas\.1: Input should be less than 1"),
    ("teacher.optim.betas=[-0.1, 0.9]", r"teacher\.optim\.betas\.0: Input should be greater than or equal to 0"),
    ("teacher..steps=3", r"^parity-mlp-small: override 'teacher\.\.steps=3': 'teacher\.\.steps' is not a dotted key$"),
    ("nonsense", r"^parity-mlp-small: override 'nonsense' is not of the form key=value$"),
])
def test_bad_overrides_are_refused_with_the_key(override, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe("parity-mlp-small", [override])


def test_python_tags_never_run(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"name: evil\nteacher: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{recipe}:2: YAML tag !!python/object/apply:os.system" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, match", [
    (b"name: a\nteacher: {steps: 1}\nteacher: {steps: 2}\n", r":3: duplicate key 'teacher' \(first on line 2\)"),
    (b"name: a\nstudents:\n  seeds: [0]\n  seeds: [1]\n", r":4: duplicate key 'seeds' \(first on line 3\)"),
    (b"name: ok\ndescription: caf\xe9\n", r":2: not UTF-8 text \(byte 0xe9"),
    (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", r": nested too deeply"),
    (b"- a\n- b\n", r": a recipe must be a YAML mapping, not list"),
])
def test_malformed_recipe_files(tmp_path, content, match):
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    with pytest.raises(RecipeError, match=match):
        load_recipe(str(path))


def test_cli_errors_are_one_clipped_line(tmp_path, capsys):
    grammar = tmp_path / "g.txt"
    grammar.write_text("s -> 'a' " + "q" * 1_000_000 + "\nx -> y\n")
    assert main(["grammar", "show", str(grammar)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and len(err) < 1500
    assert one_line("a\n\n  b   c\n") == "a; b c"


def test_json_has_no_nan_and_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {"loss": float("nan"), "xs": [1.0, float("inf")], "ok": 2.5})
        write_text(tmp_path / "r.txt", "hi")
    finally:
        os.umask(old)
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON")) == \
        {"loss": None, "xs": [1.0, None], "ok": 2.5}
    for name in ("r.json", "r.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_write_errors_name_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=rf"cannot write {blocker}/sub: "):
        write_json(blocker / "sub" / "r.json", {})
    with pytest.raises(OutputError, match=r"cannot write .*: File name too long"):
        write_json(tmp_path / ("n" * 300) / "r.json", {})
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".r.json.x1.tmp").write_text("half")
    assert remove_stale_temporaries(tmp_path) == 1 and not list(tmp_path.rglob("*.tmp"))


def test_recursive_sampler_handles_very_long_sentences():
    g = parse_grammar("s -> 'a' s [0.999]\ns -> 'a' [0.001]\n")
    lengths = [len(s) for s in sample_sentences_recursive(g, 50, seed=0)]
    assert max(lengths) > 1000  # far deeper than Python's recursion limit allows a recursive sampler
    with pytest.raises(ValueError, match="exceeded max_len=100"):
        sample_sentences_recursive(g, 50, seed=0, max_len=100)


def test_environment_names_the_machine():
    from progdistill.io import _ISA_FLAGS, environment_info

    machine = environment_info()["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["torch_threads"] >= 1
    assert set(machine["isa_flags"]) <= set(_ISA_FLAGS)
    assert machine["torch_cpu_capability"] in ("DEFAULT", "NO AVX", "AVX2", "AVX512", "ZVECTOR", "SVE256", "SVE")


def test_a_second_process_on_a_run_folder_is_refused(tmp_path):
    import subprocess
    import sys

    from progdistill.runlock import FolderInUseError, lock_run_folder, unlock_run_folder

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from progdistill.runlock import "
                               f"lock_run_folder; lock_run_folder({str(tmp_path / 'run')!r}); print('locked', "
                               "flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderInUseError, match=rf"{tmp_path / 'run'} is in use by progdistill \(pid {holder.pid}\)"):
            lock_run_folder(tmp_path / "run")
    finally:
        holder.kill()
        holder.wait()
    lock_run_folder(tmp_path / "run")  # the OS released the dead holder's lock
    unlock_run_folder(tmp_path / "run")


def _hold_lock(folder):
    """A process holding `folder`'s run lock (as a running `progdistill run` does), once it says so."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import time; from progdistill.runlock import "
                               f"lock_run_folder; lock_run_folder({str(folder)!r}); print('locked', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _files(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_report_refuses_a_run_folder_another_process_holds(tmp_path, capsys):
    from test_config_cli import TINY

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "run"
    assert main(["teacher", str(recipe), "--out", str(out), "--quiet", "teacher.steps=100"]) == 0
    from progdistill.runlock import unlock_run_folder

    unlock_run_folder(out)  # the `teacher` command above ran in this process: end it as its process would
    (out / "teacher_phases.json").unlink()  # what report would write first
    capsys.readouterr()
    holder = _hold_lock(out)
    before = _files(out)  # .lock holds the holder's pid
    try:
        assert main(["report", str(out)]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert err == (f"error: {out} is in use by progdistill (pid {holder.pid}); wait for it to finish or stop it "
                   "(an interrupted run resumes when run again)\n")
    assert _files(out) == before  # nothing written
    assert main(["report", str(out)]) == 0  # the holder is gone: the lock is free again
    assert (out / "report.md").is_file() and (out / "teacher_phases.json").is_file()
    from progdistill.runlock import _HELD

    assert out.resolve() not in _HELD  # report released the lock it took


def test_an_unreadable_probe_file_is_computed_again_on_resume_and_left_out_of_a_report(tmp_path, capsys):
    from test_config_cli import TINY

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "run"
    small = ["--quiet", "teacher.steps=100", "students.steps=20", "students.methods=[ce]", "students.seeds=0"]
    assert main(["run", str(recipe), "--out", str(out), *small]) == 0
    probes = out / "probes" / "teacher_monomials.json"
    good = probes.read_text()
    assert "monomial_peak" in json.loads((out / "summary.json").read_text())["teacher"]
    probes.write_text(good[:len(good) // 2])  # truncated
    capsys.readouterr()
    assert main(["report", str(out)]) == 0  # reports what is there, without the unreadable rows
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.startswith(f"warning: {probes}: not valid JSON (truncated or corrupt?): ")
                       for line in err), err
    assert err[0].endswith("; left out of the summary (the run's probe stage computes it again)")
    assert "monomial_peak" not in json.loads((out / "summary.json").read_text())["teacher"]
    assert probes.read_text() == good[:len(good) // 2]  # report computes no probe
    assert main(["run", str(recipe), "--out", str(out), *small]) == 0  # a resume computes it again
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {probes}: not valid JSON (truncated or corrupt?): ")
    assert err[0].endswith("; computing it again")
    assert probes.read_text() == good  # the same rows as the first time
    assert "monomial_peak" in json.loads((out / "summary.json").read_text())["teacher"]
    probes.write_text("{}")  # readable, but not the rows of a probe
    assert main(["run", str(recipe), "--out", str(out), *small]) == 0
    assert capsys.readouterr().err == f"warning: {probes}: not a JSON list; computing it again\n"
    assert probes.read_text() == good


def test_a_truncated_student_state_is_refused_in_one_line_when_students_are_grouped(tmp_path, capsys):
    from progdistill.layout import student_folder
    from test_config_cli import TINY

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "run"
    small = ["--quiet", "teacher.steps=100", "students.steps=40", "students.methods=[ce, one-shot]",
             "students.seeds=0", "students.group_size=2"]
    assert main(["distill", str(recipe), "--out", str(out), *small]) == 0
    for method in ("ce", "one-shot"):  # both unfinished again, one with a truncated training state
        (student_folder(out, method, 40, 0) / "result.json").unlink()
    state = student_folder(out, "ce", 40, 0) / "state" / "state.json"
    state.parent.mkdir(exist_ok=True)
    state.write_text('{"step": 2')
    capsys.readouterr()
    assert main(["distill", str(recipe), "--out", str(out), *small]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {state}: not valid JSON (truncated or corrupt?): ") and err.count("\n") == 1


def test_workers_die_with_their_parent(tmp_path):
    import subprocess
    import sys
    import time

    script = (
        "import concurrent.futures as cf, multiprocessing as mp, os, time\n"
        "from progdistill.processes import die_with_parent\n"
        "def pid(_):\n    time.sleep(0.5)\n    return os.getpid()\n"
        "if __name__ == '__main__':\n"
        "    pool = cf.ProcessPoolExecutor(2, mp_context=mp.get_context('spawn'), initializer=die_with_parent)\n"
        "    print(*set(pool.map(pid, range(4))), flush=True)\n"
        "    time.sleep(60)\n")
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert workers
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.1)
        alive = [p for p in workers if _alive(p)]
    assert not alive, f"workers {alive} outlived their parent"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("arch", [
    {"type": "mlp", "width": 16},
    {"type": "gpt", "layers": 1, "heads": 2, "head_dim": 4},
    {"type": "bert", "layers": 1, "heads": 2, "head_dim": 4, "dropout": 0.1},
    {"type": "gpt-lm", "layers": 1, "heads": 2, "head_dim": 4, "dropout": 0.1},
])
def test_resume_is_bit_identical_with_dropout(tmp_path, arch):
    import torch

    from progdistill.grammar import generate_grammar
    from progdistill.models import build_model, resolve_architecture
    from progdistill.tasks import ParityTask
    from progdistill.tasks.pcfg import PCFGARTask, PCFGMLMTask
    from progdistill.trainer import OptimConfig, TrainConfig, train

    if arch["type"] in ("mlp", "gpt"):
        task = ParityTask(d=8, k=2, eval_size=64, data_seed=1)
    else:
        grammar = generate_grammar(levels=2, rhs_lengths=(2,), seed=0)
        task = (PCFGMLMTask(grammar, eval_size=32, data_seed=1) if arch["type"] == "bert"
                else PCFGARTask(grammar, level=1, eval_size=32, data_seed=1))
    resolved = resolve_architecture(arch, task.model_io())
    cfg = TrainConfig(steps=20, batch_size=8, optim=OptimConfig(name="adamw", lr=3e-3), eval_every=5)

    def fresh():
        torch.manual_seed(0)
        return build_model(resolved)

    straight = fresh()
    train(straight, task, cfg, tmp_path / "a", {"model": resolved}, progress=False)
    resumed = fresh()
    train(resumed, task, cfg, tmp_path / "b", {"model": resolved}, progress=False, stop_at=10)
    torch.manual_seed(12345)  # as in a new process: the global generator is wherever it happens to be
    resumed = fresh()
    train(resumed, task, cfg, tmp_path / "b", {"model": resolved}, progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_teacher_killed_after_its_last_file_is_finished_and_reusable(tmp_path, monkeypatch):
    from progdistill import trainer
    from progdistill.experiment import finished_teacher, train_teacher
    from progdistill.trajectory import Trajectory

    recipe = load_recipe("parity-mlp-small", ["task.d=10", "task.k=2", "task.eval_size=64", "teacher.steps=40",
                                              "teacher.checkpoint_every=20", "teacher.eval_every=10",
                                              "teacher.model.width=8"])

    class Killed(Exception):
        pass

    def killed(path, *args, **kwargs):
        raise Killed  # the kill lands between curve.json and the removal of the resumable state

    monkeypatch.setattr(trainer.shutil, "rmtree", killed)
    with pytest.raises(Killed):
        train_teacher(recipe, tmp_path, progress=False)
    monkeypatch.undo()
    folder = tmp_path / "teacher"
    assert (folder / "state").is_dir() and (folder / "supervision.json").is_file()
    reuse = load_recipe("parity-mlp-small", [f"teacher.path={folder}", "task.d=10", "task.k=2", "task.eval_size=64",
                                             "teacher.model.width=8"])
    assert finished_teacher(reuse, tmp_path / "other").steps == [0, 20, 40]
    assert train_teacher(recipe, tmp_path, progress=False).steps == Trajectory(folder).steps
    assert not (folder / "state").exists()


def test_paths_the_system_refuses_are_one_line_errors(tmp_path, monkeypatch, capsys):
    """A name over the filesystem's 255 characters, a symlink loop and an empty --out: one line, exit 2."""
    monkeypatch.chdir(tmp_path)
    long = "a" * 300
    cases = [(["run", "parity-mlp-small", "--out", long], f"{long}: File name too long"),
             (["run", "parity-mlp-small", f"teacher.path={long}", "--out", "o"], f"{long}: File name too long"),
             (["run", f"{long}.yaml"], f"{long}.yaml: File name too long"),
             (["report", long], f"{long}/run.json: File name too long")]
    (tmp_path / "loop").symlink_to("loop")
    cases += [(["run", "parity-mlp-small", "--out", "loop"], "cannot write loop: "),  # the reason: Python's words
              (["run", "parity-mlp-small", "--out", ""], "--out: an empty path")]
    for argv, end in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        # a long path is clipped in its middle: the message keeps its start and its end
        assert err.rstrip("\n").endswith(end[-60:]) or end in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop"]


def test_a_clipped_message_keeps_its_advice():
    message = "runs/x holds a run of a different config (" + "; ".join(f"k{i}: 1 -> 2" for i in range(80)) + \
        "); choose another --out or delete it"
    text = one_line(message)
    assert text.startswith("runs/x holds a run of a different config (k0: 1 -> 2")
    assert text.endswith("; choose another --out or delete it") and " ... " in text and len(text) < 520


@pytest.mark.parametrize("content", ["[]", "{}", '{"config": 3}'])
def test_a_run_json_of_another_shape_is_a_one_line_error(tmp_path, capsys, content):
    run = tmp_path / "r"
    run.mkdir()
    (run / "run.json").write_text(content)
    message = f"error: {run}/run.json: not a progdistill run.json (expected an object with a 'config' mapping); " \
        "choose another folder, or delete this one to start afresh\n"
    for argv in (["report", str(run)], ["run", "parity-mlp-small", "--out", str(run), "--quiet"]):
        assert main(argv) == 2
        assert capsys.readouterr().err == message
    assert [p.name for p in run.iterdir()] == ["run.json"] and (run / "run.json").read_text() == content


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "''", ".."])
def test_a_recipe_name_stays_one_folder_inside_runs(name):
    from progdistill.config import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=r"name: .* is not a folder name \(the default run folder is runs/<name>"):
        load_recipe("parity-mlp-small", [f"name={name}"])


def test_a_name_too_long_deep_in_out_leaves_no_parent_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "parity-mlp-small", "--out", "x/y/" + "a" * 300, "--quiet"]) == 2
    assert capsys.readouterr().err.endswith(": File name too long\n") and list(tmp_path.iterdir()) == []


def test_the_command_loads_lazily_and_a_ctrl_c_while_loading_is_one_line(monkeypatch, capsys):
    import builtins
    import subprocess
    import sys

    from progdistill import entry

    loaded = subprocess.run([sys.executable, "-c", "import sys, progdistill; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True)
    assert loaded.stdout == "False\n"  # `import progdistill` loads torch only when a name needs it
    real_import = builtins.__import__

    def interrupted(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "cli" and level == 1:
            raise KeyboardInterrupt
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert entry.main() == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_the_same_tensors_and_metadata_saved_twice_give_the_same_bytes(tmp_path):
    """safetensors writes metadata from a hash map in a random order (here checked to differ between
    saves); save_tensors sorts the header, so checkpoints of a resumed run equal the uninterrupted run's
    byte for byte, and the file still reads back to the same tensors and metadata."""
    import hashlib

    import torch
    from safetensors.torch import save

    from progdistill.io import load_tensors_and_metadata, save_tensors

    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    metadata = {k: f"value {k}" for k in ("step", "config", "format", "teacher", "é", "block", "seed", "x")}
    unsorted = {hashlib.sha256(save(tensors, metadata)).hexdigest() for _ in range(10)}
    assert len(unsorted) > 1  # the library's own order varies: the reason for sorting
    digests = set()
    for i in range(10):
        save_tensors(tmp_path / f"{i}.safetensors", tensors, metadata)
        digests.add(hashlib.sha256((tmp_path / f"{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    loaded, meta = load_tensors_and_metadata(tmp_path / "0.safetensors")
    assert meta == metadata and loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)


TERMINATED = parity_workers("tiny-terminated", teacher_steps=4000, eval_every=50, checkpoint_every=250, seeds="[0]",
                            methods="[ce, one-shot]", workers=2)


def _children(pid):
    """The pids whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().split(")")[-1].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    return found


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc")
@pytest.mark.parametrize("group", [False, True])
def test_sigterm_stops_a_run_like_ctrl_c_and_the_run_resumes_to_the_same_results(tmp_path, group):
    """SIGTERM while the teacher trains and its probes run in a worker beside it, to the main process
    (`kill PID`, timeout, docker stop) or to its whole process group, workers included (Slurm): one line,
    exit status 143 (128 + 15), no leaked-semaphore warning, no worker process and no temporary folder
    left; the same command again finishes with an uninterrupted run's results."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TERMINATED)
    temp = tmp_path / "tmp"  # this run's own TMPDIR: EarlyProbes' folder is made there
    temp.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "TMPDIR": str(temp),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}

    def command(out):
        return [sys.executable, "-m", "progdistill", "run", str(recipe), "--out", str(out), "--quiet"]

    run = tmp_path / "run"
    proc = subprocess.Popen(command(run), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=group)
    try:
        deadline = time.monotonic() + 120
        while not (run / "teacher" / "checkpoint-1500" / "meta.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        assert not (run / "teacher" / "curve.json").exists()  # the teacher is still training
        workers = _children(proc.pid)
        assert workers  # the run's worker processes (and multiprocessing's resource tracker)
        if (os.cpu_count() or 1) >= 2:  # a core free beside the teacher: its probes run in a worker
            assert [p.name for p in temp.iterdir() if p.name.startswith("progdistill-")]
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err == "terminated; run the same command again to resume\n"
    assert "report:" not in out
    deadline = time.monotonic() + 20  # workers exit as the pool shuts down, the resource tracker after
    while [p for p in workers if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)]
    assert not [p.name for p in temp.iterdir() if p.name.startswith("progdistill-")]
    if group:
        return  # resuming is the same after either

    resumed = subprocess.run(command(run), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    straight = subprocess.run(command(reference), env=env, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr
    assert resumed.stdout.replace(str(run), "") == straight.stdout.replace(str(reference), "")

    def methods(folder):
        return json.loads((folder / "summary.json").read_text())["methods"]

    assert methods(run) == methods(reference)
    assert ((run / "probes" / "teacher_monomials.json").read_bytes()
            == (reference / "probes" / "teacher_monomials.json").read_bytes())
    assert not [p.name for p in temp.iterdir() if p.name.startswith("progdistill-")]


def test_report_on_a_folder_without_a_finished_teacher_leaves_it_untouched(tmp_path, capsys):
    """The refusal comes before the lock: no .lock is created, no file is rewritten."""
    from test_config_cli import TINY

    from progdistill.experiment import prepare_run

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    from progdistill.runlock import unlock_run_folder

    out = prepare_run(load_recipe(str(recipe)), tmp_path / "run")  # run.json, no teacher yet
    unlock_run_folder(out)  # prepare_run took the lock in this process: release it as its process would
    (out / ".lock").unlink(missing_ok=True)  # a folder copied without its lock file
    before = _files(out)
    assert main(["report", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: {out}: the teacher has not finished training; nothing to report yet "
                                       "(`progdistill teacher` or `progdistill run` trains it)\n")
    assert _files(out) == before


@pytest.mark.parametrize("part", ["teacher", "students"])
def test_an_empty_state_json_says_how_to_restart_and_the_restart_gives_the_same_results(tmp_path, capsys,
                                                                                         monkeypatch, part):
    """A model's empty state.json stops the resume naming it and saying to delete its state/ folder; done,
    the model trains again from step 0 and the run ends with the summary of a run never interrupted."""
    from progdistill import trainer
    from progdistill.runlock import unlock_run_folder
    from test_config_cli import TINY

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    small = ["--quiet", "teacher.steps=100", "students.steps=40", "students.methods=[ce, one-shot]",
             "students.seeds=0", "students.group_size=1", "students.eval_every=10"]
    assert main(["run", str(recipe), "--out", str(tmp_path / "whole"), *small]) == 0

    class Killed(Exception):
        pass

    real = trainer.Run.save_state

    def save_then_die(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if part in self.out.relative_to(out).parts:
            raise Killed

    out = tmp_path / "cut"
    monkeypatch.setattr(trainer.Run, "save_state", save_then_die)
    with pytest.raises(Killed):
        main(["run", str(recipe), "--out", str(out), *small])
    monkeypatch.undo()
    unlock_run_folder(out)  # the killed run ran in this process: end it as its process would
    states = list(out.glob("**/state/state.json"))
    assert len(states) == 1 and part in states[0].relative_to(out).parts
    states[0].write_text("")  # empty, as a full disk or a crash of the filesystem can leave it
    files = [p for p in out.rglob("*") if p.is_file()]
    for p in files:
        os.utime(p, (1_000_000_000, 1_000_000_000))
    before = {p: (p.read_bytes(), p.stat().st_mtime) for p in files}
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(out), *small]) == 2
    assert {p: (p.read_bytes(), p.stat().st_mtime) for p in out.rglob("*") if p.is_file()} == before  # untouched
    err = capsys.readouterr().err
    assert err.startswith(f"error: {states[0]}: not valid JSON (truncated or corrupt?): ") and err.endswith(
        f"; delete {states[0].parent} to train this model again from step 0 (its checkpoints are written anew)\n")
    assert err.count("\n") == 1
    shutil.rmtree(states[0].parent)  # what the message says
    assert main(["run", str(recipe), "--out", str(out), *small]) == 0
    whole, cut = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("whole", "cut"))
    assert cut == whole
