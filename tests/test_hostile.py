"""Hostile inputs, generated: recipes, overrides, grammar files and teacher checkpoint folders, valid and broken.
For each: the CLI exits 0, or exits 2 with exactly one `error:` line and no traceback; a refusal leaves the run
folder and every input file byte-identical; an input known to be bad is never accepted; a payload never runs
(issue: reliability). PROGDISTILL_HOSTILE_EXAMPLES sets the number of cases (default 1000, seeded)."""

import collections
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tiny import parity_tiny  # noqa: E402
from progdistill import experiment  # noqa: E402
from progdistill.cli import main  # noqa: E402
from progdistill.config import load_recipe  # noqa: E402

EXAMPLES = int(os.environ.get("PROGDISTILL_HOSTILE_EXAMPLES", "1000"))
COUNTS: collections.Counter = collections.Counter()

TINY = parity_tiny()

PAYLOAD = "!!python/object/apply:os.system ['touch {marker}']"


class _Marker:
    """Unpickling this creates the marker file: the payload of a pickle posing as safetensors."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# --- overrides: (key, value, known bad?) -----------------------------------------------------------
SIZE_KEYS = ["teacher.steps", "teacher.batch_size", "teacher.model.width", "teacher.model.depth",
             "students.model.width", "students.batch_size", "task.eval_size", "probe.monomials.off_support"]
OTHER_KEYS = ["teacher.eval_every", "students.eval_every", "teacher.checkpoint_every", "task.d", "task.k", "teacher.optim.lr", "students.kd.alpha", "students.kd.tau",
              "students.steps", "students.seeds", "probe.monomials.degrees", "teacher.optim.betas",
              "students.methods.2.checkpoint", "students.methods.2.switch", "teacher.path", "phases.metric", "device",
              "teacher.seed", "probe.every", "report.target"]
ALWAYS_BAD = ["true", "false", "[1,", "'abc'", "{a: 1}", ".nan", "{", "]", "!!binary aGk=", "- -", "? x"]
SIZE_BAD = ["-1", "0", ".inf", "-.inf", "1.5", "99999999999999999999999", "1000000000000000000", "100000000000"]
GOOD = {"teacher.steps": ["1", "2", "20", "35"], "teacher.batch_size": ["1", "4"], "teacher.eval_every": ["5", "20"],
        "teacher.model.width": ["1", "4", "16"], "teacher.model.depth": ["1", "2"], "students.model.width": ["2", "8"],
        "students.batch_size": ["2"], "students.eval_every": ["5"], "task.eval_size": ["16", "100"],
        "probe.monomials.off_support": ["1", "5"], "teacher.checkpoint_every": ["5", "10"], "task.d": ["6", "10"],
        "task.k": ["1", "3"], "teacher.optim.lr": ["0.1"], "students.kd.alpha": ["0.5"], "students.kd.tau": ["2.0"],
        "students.steps": ["[10, 20]"], "students.seeds": ["[0, 1]"], "probe.monomials.degrees": ["[1]", "[1, 2]"],
        "teacher.optim.betas": ["[0.5, 0.9]"], "students.methods.2.checkpoint": ["0", "10", "middle"],
        "students.methods.2.switch": ["5"], "phases.metric": ["loss"], "teacher.seed": ["5"], "probe.every": ["2"],
        "report.target": ["0.5"]}
KNOWN_BAD = {"task.k": ["0", "9", "-2"], "task.d": ["0", "1"], "teacher.optim.lr": ["-1", ".inf"],
             "students.kd.alpha": ["2", "-0.5"], "students.kd.tau": ["-1"], "students.steps": ["[]", "[0]", "[10, true]"],
             "probe.monomials.degrees": ["[-1]", "[50]", "[0]", "[true]"], "teacher.optim.betas": ["[0.9, 1.0]", "[-0.1, 0.5]"],
             "students.methods.2.checkpoint": ["99999", "-5", "nowhere"], "teacher.path": ["/nonexistent/teacher"],
             "phases.metric": ["bogus"], "device": ["cuda:7", "tpu"], "probe.every": ["0"], "report.target": ["2", "0"],
             "teacher.checkpoint_every": ["-3"], "teacher.eval_every": ["0", "-1", ".inf"],
             "students.eval_every": ["0", "-2"]}


@st.composite
def override_case(draw):
    overrides, bad = [], False
    keys = SIZE_KEYS + OTHER_KEYS + ["teacher.bogus", "teacher..steps", "=5", "students.methods.9.x"]
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):  # a later one wins
        choices = [(v, False) for v in GOOD.get(key, [])] + [(v, True) for v in KNOWN_BAD.get(key, []) + ALWAYS_BAD]
        if key in SIZE_KEYS:
            choices += [(v, True) for v in SIZE_BAD]
        if key not in GOOD and key not in KNOWN_BAD:  # not a recipe key: any value is refused
            choices = [(v, True) for v in ["1", "x", "[1, 2]"]]
        value, known_bad = draw(st.sampled_from(choices)) if draw(st.integers(0, 9)) else (PAYLOAD, True)
        overrides.append(f"{key}={value}")
        bad = bad or known_bad
    return {"kind": "override", "overrides": overrides, "bad": bad, "real": False}


@st.composite
def recipe_case(draw):
    text = TINY.encode()
    how = draw(st.sampled_from(["truncate", "insert", "duplicate", "tag", "deep", "noise", "unchanged", "drop_line"]))
    bad = None
    if how == "truncate":
        text = text[:draw(st.integers(0, len(text) - 1))]
    elif how == "insert":
        at = draw(st.integers(0, len(text)))
        junk = draw(st.binary(min_size=1, max_size=8))
        text = text[:at] + junk + text[at:]
        bad = True if any(b >= 0x80 for b in junk) and not _utf8(text) else None
    elif how == "duplicate":
        lines = text.splitlines(keepends=True)
        top = [i for i, line in enumerate(lines) if line[:1].isalpha()]
        i = draw(st.sampled_from(top))
        text = b"".join(lines + [lines[i]]) if lines[i].rstrip().endswith(b"}") or b": " in lines[i] else text
        bad = True if text != TINY.encode() else None
    elif how == "tag":
        text = text.replace(b"steps: 20\n", ("steps: " + PAYLOAD + "\n").encode(), 1)
        bad = True
    elif how == "deep":
        depth = draw(st.integers(100, 3000))
        text += b"extra: " + b"[" * depth + b"]" * depth + b"\n"
        bad = True
    elif how == "noise":
        text = draw(st.binary(max_size=200)) if draw(st.booleans()) else draw(st.text(max_size=200)).encode()
        bad = None
    elif how == "drop_line":
        lines = text.splitlines(keepends=True)
        del lines[draw(st.integers(0, len(lines) - 1))]
        text = b"".join(lines)
    return {"kind": "recipe", "recipe": text, "bad": bad, "real": how == "unchanged" and draw(st.integers(0, 9)) == 0,
            "overrides": []}


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@st.composite
def grammar_case(draw):
    symbols = ["s", "a", "b", "'x'", "'y'", "'z'"]
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        lhs = draw(st.sampled_from(["s", "a", "b", "'q'", "", "s s"]))
        rhs = " ".join(draw(st.lists(st.sampled_from(symbols + ["|", "->", "[", "]"]), min_size=0, max_size=4)))
        prob = draw(st.sampled_from(["[0.5]", "[1]", "[0.3]", "[1.5]", "[-1]", "[x]", "", "[0.999]", "[nan]"]))
        lines.append(f"{lhs} -> {rhs} {prob}" if draw(st.integers(0, 9)) else draw(st.text(max_size=30)))
    valid = "s -> a b [1.0]\na -> 'x' [0.5]\na -> 'y' [0.5]\nb -> 'z' [1]\n"
    text = valid if draw(st.integers(0, 4)) == 0 else "\n".join(lines) + "\n"
    return {"kind": "grammar", "grammar": text.encode("utf-8", "surrogatepass"), "bad": None, "real": False,
            "overrides": []}


CHECKPOINT_BREAKS = {  # name: known bad?
    "truncate": True, "garbage": True, "pickle": True, "torch_save": True, "meta_list": True, "meta_model_int": True,
    "meta_no_width": True, "meta_not_json": True, "curve_list": True, "curve_no_accuracy": True, "curve_object": True,
    "only_checkpoint_0": True, "int8": True, "float64": True, "no_curve": False, "drop_meta": None, "none": False,
    "empty_folder": True, "wrong_task": True,
}


@st.composite
def checkpoint_case(draw):
    breaks = draw(st.lists(st.sampled_from(sorted(CHECKPOINT_BREAKS)), min_size=1, max_size=2, unique=True))
    breaks.sort(key=lambda b: b != "no_curve")  # removing curve.json would undo a broken one
    step = draw(st.sampled_from([0, 10, 20]))
    known = [CHECKPOINT_BREAKS[b] for b in breaks]
    bad = None if "drop_meta" in breaks else True if any(k is True for k in known) else False
    return {"kind": "checkpoint", "breaks": breaks, "step": step, "bad": bad, "real": False, "overrides": []}


def _break(folder: Path, how: str, step: int, marker: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    ckpt = folder / f"checkpoint-{step}"
    weights, meta = ckpt / "model.safetensors", ckpt / "meta.json"
    if not ckpt.is_dir():
        return
    if how == "truncate" and weights.is_file():
        weights.write_bytes(weights.read_bytes()[: max(1, weights.stat().st_size // 2)])
    elif how == "garbage":
        weights.write_bytes(os.urandom(64))
    elif how == "pickle":
        weights.write_bytes(pickle.dumps(_Marker(str(marker))))
    elif how == "torch_save":
        torch.save({"w": _Marker(str(marker))}, weights)
    elif how in ("meta_list", "meta_model_int", "meta_no_width", "meta_not_json") and meta.is_file():
        try:
            content = json.loads(meta.read_text())
        except ValueError:
            return
        if not isinstance(content, dict) or not isinstance(content.get("model"), dict):
            return
        new = {"meta_list": "[]", "meta_model_int": json.dumps({**content, "model": 5}), "meta_not_json": '{"mo',
               "meta_no_width": json.dumps({**content, "model": {k: v for k, v in content["model"].items()
                                                                 if k != "width"}})}[how]
        meta.write_text(new)
    elif how in ("curve_list", "curve_no_accuracy", "curve_object"):
        (folder / "curve.json").write_text({"curve_list": "[]", "curve_object": '{"a": 1}',
                                            "curve_no_accuracy": '[{"step": 0, "loss": 1.0}]'}[how])
    elif how == "only_checkpoint_0":
        for other in folder.glob("checkpoint-*"):
            if other.name != "checkpoint-0":
                shutil.rmtree(other)
    elif how in ("int8", "float64") and weights.is_file():
        try:
            tensors = load_file(weights)
        except Exception:  # broken already
            return
        save_file({k: v.to(torch.int8 if how == "int8" else torch.float64) for k, v in tensors.items()}, weights)
    elif how == "no_curve":
        (folder / "curve.json").unlink(missing_ok=True)
    elif how == "drop_meta":
        meta.unlink(missing_ok=True)
    elif how == "empty_folder":
        for child in list(folder.iterdir()):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    elif how == "wrong_task" and meta.is_file():
        try:
            content = json.loads(meta.read_text())
            content["model"]["input_dim"] = 99
        except (ValueError, TypeError, KeyError):
            return
        meta.write_text(json.dumps(content))


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


class _Planned(BaseException):
    """The run was planned and its folder written; the stage stops before training."""


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    from progdistill.experiment import train_teacher

    root = tmp_path_factory.mktemp("hostile")
    (root / "tiny.yaml").write_text(TINY)
    train_teacher(load_recipe(str(root / "tiny.yaml")), root, progress=False)
    return root / "teacher"


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(case=st.one_of(override_case(), override_case(), recipe_case(), grammar_case(), checkpoint_case()))
def test_hostile_inputs(case, tiny_teacher, capsys, monkeypatch):
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        _run_case(case, work, tiny_teacher, capsys, monkeypatch)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_case(case, work, tiny_teacher, capsys, monkeypatch):
    marker = work / "MARKER"
    recipe = work / "recipe.yaml"
    recipe.write_bytes(case.get("recipe", TINY.encode()))
    out = work / "out"
    overrides = [o.replace("{marker}", str(marker)) for o in case["overrides"]]
    if case["kind"] == "grammar":
        (work / "g.txt").write_bytes(case["grammar"])
        argv = ["grammar", "show", str(work / "g.txt"), "-n", "20"]
    else:
        if case["kind"] == "checkpoint":
            shutil.copytree(tiny_teacher, work / "teacher")
            for how in case["breaks"]:
                _break(work / "teacher", how, case["step"], marker)
            overrides = [f"teacher.path={work / 'teacher'}"]
        if case["kind"] == "recipe":
            recipe.write_bytes(case["recipe"].replace(b"{marker}", str(marker).encode()))
        argv = ["teacher", str(recipe), *overrides, "--out", str(out), "--quiet"]
    before = _snapshot(work)
    real_train = experiment.train_teacher

    def planned(recipe_, out_, *args, **kwargs):
        if case["real"]:
            return real_train(recipe_, out_, False)
        if recipe_.teacher.path:
            experiment.finished_teacher(recipe_, out_)
        raise _Planned

    monkeypatch.setattr(experiment, "train_teacher", planned)
    try:
        code = main(argv)
    except _Planned:
        code = 0
    except SystemExit as e:  # argparse: not reached by these cases
        code = e.code
    except BaseException as e:  # a traceback
        COUNTS["tracebacks"] += 1
        raise AssertionError(f"traceback {type(e).__name__}: {e} for {argv}") from e
    finally:
        monkeypatch.undo()
    captured = capsys.readouterr()
    COUNTS["cases"] += 1
    COUNTS[f"cases.{case['kind']}"] += 1
    assert not marker.exists(), f"a payload ran: {argv}"
    assert code in (0, 2), (code, argv)
    after = _snapshot(work)
    if code == 2:
        COUNTS["refused"] += 1
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        COUNTS["refusals that changed a file"] += bool(changed)
        assert not changed, f"refused {argv} but changed {changed[:5]}: {lines[0]}"
    else:
        COUNTS["accepted"] += 1
        COUNTS["silently accepted"] += case["bad"] is True
        assert case["bad"] is not True, f"accepted a bad input: {argv}"
        inputs = {k: v for k, v in before.items() if not k.startswith("out")}
        assert {k: after.get(k) for k in inputs} == inputs, "an input file changed"
        if case["kind"] != "grammar":
            assert (out / "run.json").is_file()


def test_hostile_counts_written():
    """Print the tallies of the property test above (run in the same session) for the README."""
    if not COUNTS:
        pytest.skip("test_hostile_inputs did not run in this session")
    print(json.dumps(dict(COUNTS), sort_keys=True))
    target = os.environ.get("PROGDISTILL_HOSTILE_REPORT")
    if target:
        Path(target).write_text(json.dumps(dict(COUNTS), sort_keys=True, indent=1))
    assert COUNTS["cases"] >= min(EXAMPLES, 1000) * 0.9
    assert COUNTS["tracebacks"] == 0 and COUNTS["refusals that changed a file"] == 0
    assert COUNTS["silently accepted"] == 0


@pytest.mark.parametrize("how", ["pickle", "torch_save"])
def test_payloads_posing_as_safetensors_never_run(tiny_teacher, tmp_path, capsys, how):
    folder = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, folder)
    marker = tmp_path / "MARKER"
    _break(folder, how, 10, marker)
    assert not marker.exists()
    (tmp_path / "r.yaml").write_text(TINY)
    assert main(["probe", str(tmp_path / "r.yaml"), f"teacher.path={folder}", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder}/checkpoint-10/model.safetensors: cannot read checkpoint") and \
        err.count("\n") == 1, err
    assert not marker.exists() and not (tmp_path / "out").exists()
