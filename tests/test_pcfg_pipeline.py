import json
import textwrap

import pytest

from progdistill.cli import main

TINY = textwrap.dedent("""
    name: tiny-{name}
    threads: 1
    task:
      name: {name}
      grammar: {{generate: {{levels: 2, seed: 0}}}}
      eval_size: 64
      {extra}
    teacher:
      model: {{type: {model}, layers: 1, heads: 2, head_dim: 8}}
      steps: 60
      batch_size: 16
      optim: {{name: adamw, lr: 3.0e-3}}
      eval_every: 10
      checkpoint_every: 20
    phases: {{sharpness: 0, noise: 0}}  # a tiny teacher: no sharp drop, its steepest stretch stands in
    probe:
      {ngram}
      nonterminal: {{train_sentences: 32, test_sentences: 16, steps: 20}}
    students:
      model: {{type: {model}, layers: 1, heads: 1, head_dim: 8}}
      steps: [20, 30]
      batch_size: 16
      optim: {{name: adamw, lr: 3.0e-3}}
      eval_every: 10
      seeds: [0, 1]
      probe_final: [nonterminal]
      methods: [ce, one-shot, {{name: progressive, start: drop_start}}, {{name: two-shot, switch: 10}}, auto]
      sweep: {{switch: 10, budget: 20, seeds: [0]}}
    report: {{target: 0.5}}
""")


@pytest.mark.parametrize("name, model, extra, ngram", [
    ("pcfg-mlm", "bert", "", "ngram: {sentences: 8, n_max: 2, positions: 2}\n  oracle: true"),
    ("pcfg-ar", "gpt-lm", "level: 2", ""),
])
def test_pcfg_pipeline_end_to_end(tmp_path, name, model, extra, ngram):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(name=name, model=model, extra=extra, ngram=ngram))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]["ce"]["budgets"]) == {"20", "30"}
    assert [e["checkpoint"] for e in summary["sweep"]] == [20, 40]
    seed = summary["methods"]["two-shot"]["budgets"]["20"]["seeds"]["0"]
    assert 0 <= seed["final_accuracy"] <= 1
    levels = seed["probes"]["nonterminal"]["levels"]
    assert len(levels) == 2 and all(0 <= lv["accuracy"] <= 1 for lv in levels)
    report = (out / "report.md").read_text()
    assert "## Non-terminal probe" in report and "## (2, T)-progressive sweep" in report
    assert "| position alone (baseline) |" in report
    assert ("## Curriculum probe: n-gram reliance" in report) == (name == "pcfg-mlm")
    for png in ["teacher.png", "students.png", "sweep.png", "nonterminal.png"] + (["ngram.png"] if ngram else []):
        assert (out / "plots" / png).is_file()
    if name == "pcfg-mlm":  # the grammar's Bayes-optimal predictor beats a 60-step teacher
        oracle = summary["oracle"]
        assert oracle["eval"]["accuracy"] > summary["teacher"]["curve"][-1]["accuracy"]
        assert oracle["eval"]["loss"] < summary["teacher"]["curve"][-1]["loss"]
        assert set(oracle["ngram"]["windows"]) == {"3", "5"} and "| Bayes-optimal |" in report


def test_oracle_only_for_masked_lm(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(name="pcfg-ar", model="gpt-lm", extra="level: 2", ngram="oracle: true"))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "only task pcfg-mlm has a Bayes-optimal predictor" in capsys.readouterr().err


def test_bad_grammar_is_a_clear_error(tmp_path, capsys):
    grammar = tmp_path / "bad.txt"
    grammar.write_text("s -> a b\na -> 'a'\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(name="pcfg-mlm", model="bert", extra="", ngram="")
                      .replace("grammar: {generate: {levels: 2, seed: 0}}", f"grammar: {{path: {grammar}}}"))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.txt:1" in err and "undefined" in err
    assert not (tmp_path / "run").exists()  # so the same --out takes the corrected recipe
    good = tmp_path / "good.txt"
    good.write_text("s -> a b\na -> 'a'\nb -> 'b' 'a'\n")
    fixed = ["teacher", str(recipe), "--out", str(tmp_path / "run"), "--quiet", f"task.grammar.path={good}",
             "teacher.steps=20", "teacher.eval_every=5"]
    assert main(fixed) == 0
    good.write_text("s -> a b\na -> 'a'\nb -> 'a' 'b'\n")  # same path, another grammar: not the same run
    assert main(fixed) == 2
    assert "another version of the grammar file" in capsys.readouterr().err


def test_oracle_command(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(name="pcfg-mlm", model="bert", extra="", ngram="ngram: {sentences: 8, n_max: 2}"))
    assert main(["oracle", str(recipe), "--ngram-sentences", "4", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("Bayes-optimal on 64 held-out sentences: accuracy")
    result = json.loads(lines[-1])
    assert 0.5 < result["accuracy"] <= 1 and result["ngram"]["pairs"] == 4 * 4
    assert set(result["ngram"]["windows"]) == {"3", "5"}
    ar = tmp_path / "ar.yaml"
    ar.write_text(TINY.format(name="pcfg-ar", model="gpt-lm", extra="level: 2", ngram=""))
    assert main(["oracle", str(ar)]) == 2
    assert "only task pcfg-mlm" in capsys.readouterr().err


def test_a_saved_teachers_probes_and_oracle_are_reused(tmp_path, monkeypatch):
    import progdistill.experiment as experiment
    from progdistill.tasks.pcfg import PCFGMLMTask

    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(name="pcfg-mlm", model="bert", extra="",
                                  ngram="ngram: {sentences: 8, n_max: 2, positions: 2}\n  oracle: true"))
    assert main(["probe", str(recipe), "--out", str(tmp_path / "a"), "--quiet"]) == 0

    def fail(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(experiment, "score_oracle", fail)
    monkeypatch.setattr(PCFGMLMTask, "probes", lambda self: {"ngram": fail, "nonterminal": fail})
    teacher = f"teacher.path={tmp_path / 'a' / 'teacher'}"
    assert main(["probe", str(recipe), "--out", str(tmp_path / "b"), teacher, "--quiet"]) == 0
    for name in ("teacher_ngram.json", "teacher_nonterminal.json", "oracle.json"):
        assert (tmp_path / "b" / "probes" / name).read_bytes() == (tmp_path / "a" / "probes" / name).read_bytes()
