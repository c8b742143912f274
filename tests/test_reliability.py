"""Bad input is refused with one line naming the problem; files are written safely (issue: reliability)."""

import json
import os
import stat

import pytest

from progdistill.cli import main, one_line
from progdistill.config import RecipeError, load_recipe
from progdistill.grammar import parse_grammar, sample_sentences_recursive
from progdistill.io import OutputError, remove_stale_temporaries, write_json, write_text


@pytest.mark.parametrize("override, match", [
    ("teacher.steps=[1,", r"override teacher\.steps: expected"),
    ("teacher.steps=!!python/object/apply:os.system ['touch MARKER']", r"YAML tag !!python/object/apply:os\.system"),
    ("teacher.steps=true", r"teacher\.steps: expected a number, got a boolean"),
    ("students.kd.alpha=true", r"students\.kd\.alpha: expected a number, got a boolean"),
    ("students.steps=[100, false]", r"students\.steps: expected a number, got a boolean"),
    ("students.methods.2.speed=.inf", r"students\.methods\.2\.speed: Input should be a finite number"),
    ("teacher.optim.betas=[0.9, 1.0]", r"teacher\.optim\.betas\.1: Input should be less than 1"),
    ("teacher.optim.betas=[-0.1, 0.9]", r"teacher\.optim\.betas\.0: Input should be greater than or equal to 0"),
    ("teacher..steps=3", r"'teacher\.\.steps' is not a dotted key"),
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
