"""The report: its first paragraph states summary.json's numbers, no legend covers data, the HTML
renders every image in a real browser, and nothing Python-internal or unshipped leaks into the text."""

import json
import re
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

from progdistill.cli import main

RECIPE = textwrap.dedent("""
    name: tiny-report
    threads: 1
    task: {name: parity, d: 14, k: 3, eval_size: 256}
    teacher:
      model: {type: mlp, width: 128}
      steps: 800
      batch_size: 16
      optim: {lr: 0.1}
      eval_every: 25
      checkpoint_every: 50
    phases: {metric: accuracy}
    probe:
      monomials: {samples: 4096, off_support: 5}
    students:
      model: {type: mlp, width: 16}
      steps: [300, 1000]
      batch_size: 16
      optim: {lr: 0.1}
      eval_every: 25
      seeds: [0, 1]
      methods: [ce, one-shot, progressive, {name: two-shot, checkpoint: middle, switch: 100}, auto]
      sweep: {switch: 100, budget: 300, seeds: [0], checkpoints: [300, 350]}
    report: {target: 0.9}
""")


def legend_problems(fig) -> list[str]:
    """Legends that cover a drawn data point (lines, bands, markers, error bars) or lie inside an axes."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    problems = []
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            frame = ax.get_window_extent(renderer)
            if box.overlaps(frame):
                problems.append(f"legend inside axes {ax.get_title()!r}")
            points = []
            for line in ax.get_lines():
                xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
                for a, b in zip(xy[:-1], xy[1:]):  # the segments between points too
                    points += [a + (b - a) * t for t in np.linspace(0, 1, 25)]
                points += list(xy)
            for coll in ax.collections:
                for path in coll.get_paths():
                    points += list(coll.get_transform().transform(path.vertices))
                points += list(coll.get_offset_transform().transform(coll.get_offsets()))
            drawn = [p for p in points if np.all(np.isfinite(p)) and frame.contains(*p)]
            covered = [p for p in drawn if box.contains(*p)]
            if covered:
                problems.append(f"legend covers {len(covered)} data point(s) of axes {ax.get_title()!r}")
    return problems


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny run (two budgets, a sweep, the monomial probe), with every figure checked for legends
    over data as it is saved."""
    import progdistill.report.sections as sections

    root = tmp_path_factory.mktemp("report")
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE)
    checked, real_save = {}, sections.save

    def save(fig, path):
        checked[path.name] = legend_problems(fig)
        return real_save(fig, path)

    sections.save = save
    try:
        assert main(["run", str(recipe), "--out", str(root / "run"), "--quiet"]) == 0
    finally:
        sections.save = real_save
    return root / "run", checked


def test_first_paragraph_states_the_summarys_numbers(run):
    out, _ = run
    assert (out / "report.md").read_text().split("\n\n")[1].startswith("At budget 300 steps")
    assert check_first_paragraph(out) >= 1  # at least one ratio or difference to CE was stated and checked


def check_first_paragraph(out) -> int:
    """Parse the numbers out of the report's first paragraph and compare them with summary.json (also
    usable on any run folder); returns how many comparisons with CE it checked."""
    summary = json.loads((out / "summary.json").read_text())
    paragraph = (out / "report.md").read_text().split("\n\n")[1]
    several = len({b for e in summary["methods"].values() for b in e["budgets"]}) > 1
    if not several:
        (budget,) = {b for e in summary["methods"].values() for b in e["budgets"]}
        paragraph = f"At budget {budget} steps, {paragraph[0].lower()}{paragraph[1:]}"
    stated = 0
    for budget, text in re.findall(r"At budget ([\d,]+) steps, (.*?)(?= At budget |$)", paragraph):
        budget = budget.replace(",", "")
        entries = {k: e["budgets"][budget] for k, e in summary["methods"].items() if budget in e["budgets"]}
        first = re.search(r"`(\S+)` reached the target accuracy (\d+(?:\.\d+)?) first: in ([\d,]+) training samples "
                          r"\(median of (\d+) seeds?\)(?:, (\d+(?:\.\d+)?)× the ([\d,]+) samples CE needed|, at most (\d+(?:\.\d+)?)× "
                          r"CE's ([\d,]+) \(a lower bound: CE reached it on (\d+) of \d+ seeds? within its budget\))?", text)
        exact = {k: e for k, e in entries.items() if not e["median_samples_is_lower_bound"]}
        if first:
            label, samples = first[1], int(first[3].replace(",", ""))
            assert float(first[2]) == summary["target"] and int(first[4]) == len(entries[label]["seeds"])
            assert samples == entries[label]["median_samples_to_target"] == min(
                e["median_samples_to_target"] for e in exact.values())
            ce = entries["ce"]["median_samples_to_target"]
            if first[5]:
                assert float(first[5]) == round(samples / ce, 2) and int(first[6].replace(",", "")) == ce
                stated += 1
            elif first[7]:
                assert float(first[7]) == round(samples / ce, 2) and int(first[8].replace(",", "")) == ce
                assert int(first[9]) == entries["ce"]["reached_target"]
                stated += 1
            else:
                assert label == "ce"
        else:
            assert not exact and "no method reached the target accuracy" in text
        if first:  # then the methods that never reached the target on any seed are named
            never = re.search(r"((?:`\S+`(?:, | and )?)+) never reached it", text)
            assert sorted(re.findall(r"`(\S+)`", never[1]) if never else []) == sorted(
                k for k, e in entries.items() if e["reached_target"] == 0)
        best = re.search(r"(?:The highest median final accuracy was `(\S+)`'s|((?:`\S+`(?:, | and )?)+) ended at the "
                         r"highest median final accuracy), (\d+(?:\.\d+)?)(?:, ([+-]\d+(?:\.\d+)?) points over CE \((\d+(?:\.\d+)?)\))?"
                         r"(?: and ([+-]\d+(?:\.\d+)?) over one-shot \((\d+(?:\.\d+)?)\))?", text)
        top = max(e["median_final_accuracy"] for e in entries.values())
        one, many, accuracy, over_ce, ce, over_one_shot, one_shot = best.groups()
        winners = [one] if one else re.findall(r"`(\S+)`", many)
        assert sorted(winners) == sorted(k for k, e in entries.items() if e["median_final_accuracy"] == top)
        assert accuracy == f"{top:.3f}"
        if over_ce:
            value = entries["ce"]["median_final_accuracy"]
            assert ce == f"{value:.3f}" and over_ce == f"{100 * (top - value):+.1f}"
            stated += 1
        if over_one_shot:
            value = entries["one-shot"]["median_final_accuracy"]
            assert one_shot == f"{value:.3f}" and over_one_shot == f"{100 * (top - value):+.1f}"
    return stated


def test_answer_sentences_on_constructed_summaries():
    from progdistill.report.verdicts import answer

    def entry(samples, bound, reached, acc):
        return {"seeds": {"0": {}, "1": {}, "2": {}}, "median_samples_to_target": samples,
                "median_samples_is_lower_bound": bound, "reached_target": reached, "median_final_accuracy": acc}

    summary = {"target": 0.95, "methods": {
        "ce": {"budgets": {"10": entry(320000, True, 0, 0.508)}},
        "one-shot": {"budgets": {"10": entry(320000, True, 0, 0.508)}},
        "progressive-from-drop": {"budgets": {"10": entry(99200, False, 3, 1.0)}},
        "auto": {"budgets": {"10": entry(140800, False, 3, 1.0)}}}}
    assert answer(summary) == (
        "`progressive-from-drop` reached the target accuracy 0.95 first: in 99,200 training samples (median of 3 "
        "seeds), at most 0.31× CE's 320,000 (a lower bound: CE reached it on 0 of 3 seeds within its budget). `ce` and "
        "`one-shot` never reached it (0 of 3 seeds each). `progressive-from-drop` and `auto` ended at the highest "
        "median final accuracy, 1.000, +49.2 points over CE (0.508) and +49.2 over one-shot (0.508).")
    summary["methods"]["auto"]["budgets"]["10"]["median_final_accuracy"] = 0.99
    assert answer(summary).endswith("The highest median final accuracy was `progressive-from-drop`'s, 1.000, +49.2 "
                                    "points over CE (0.508) and +49.2 over one-shot (0.508).")
    summary["methods"]["ce"]["budgets"]["10"] = entry(200000, False, 2, 0.97)
    assert "0.50× the 200,000 samples CE needed." in answer(summary)
    for e in summary["methods"].values():
        e["budgets"]["10"].update(median_samples_is_lower_bound=True, reached_target=0)
    assert answer(summary).startswith("No method reached the target accuracy 0.95 on most seeds. The highest")


def test_no_legend_covers_data_and_every_figure_has_a_pdf(run):
    out, checked = run
    assert {"summary.png", "students.png", "final_accuracy.png", "teacher.png", "monomials.png",
            "monomial_degrees.png", "sweep.png"} <= set(checked)
    assert {name: problems for name, problems in checked.items() if problems} == {}
    for name in checked:
        assert (out / "plots" / name).with_suffix(".pdf").stat().st_size > 1000


def test_the_legend_check_can_fail():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="a line under the legend")
    ax.legend(loc="center")
    assert legend_problems(fig)
    plt.close(fig)


def test_report_text_has_no_python_reprs_or_unshipped_references(run):
    out, _ = run
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        text = re.sub(r"data:image/png;base64,[^\"]*", "", text)
        for leak in (r"\{'", r"\['", r"\bNone\b", r"\bTrue\b", r"\bFalse\b", "SPEC", r"\bnan\b"):
            assert not re.search(leak, text), (name, leak)
    report = (out / "report.md").read_text()
    for heading in ("## What was run", "## Results", "## Teacher", "## Curriculum probe: monomial correlations",
                    "## (2, T)-progressive sweep"):
        assert heading in report
    assert "**Run health:" in report.split("\n\n")[2]
    assert "| `one-shot` |" in report and "as it resolved on this teacher" in report


CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var d = document.createElement("div"); d.id = "image-check";
  d.textContent = "images=" + imgs.length + " broken=" + broken.map(function (i) { return i.alt; }).join(",");
  document.body.appendChild(d);
});
</script><img alt="control" src="data:image/png;base64,bm90IGFuIGltYWdl">"""


def test_html_report_renders_every_image_in_chromium(run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium on this machine")
    out, _ = run
    html = (out / "report.html").read_text()
    assert re.findall(r'(?:src|href)="(?!data:)', html) == []  # nothing to fetch: one self-contained file
    page = tmp_path / "check.html"  # the report plus a script that counts its images and one broken control
    page.write_text(html.replace("</body>", CHECK + "</body>"))
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    figures = html.count("<img ")
    assert figures >= 7
    assert f'id="image-check">images={figures + 1} broken=control<' in dom


def test_a_figure_saved_twice_gives_the_same_bytes_and_no_temporaries(tmp_path):
    """PDFs carry no creation date, so two runs' plots compare equal; the writes are atomic."""
    import matplotlib.pyplot as plt

    from progdistill.report.style import save

    paths = []
    for name in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [1, 0, 2], label="x")
        ax.legend()
        paths.append(save(fig, tmp_path / f"{name}.png"))
    for first, second in zip(*paths):
        assert first.read_bytes() == second.read_bytes() and first.stat().st_size > 1000
    assert b"CreationDate" not in paths[0][1].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "a.png", "b.pdf", "b.png"]


def test_without_phases_the_summary_caption_does_not_speak_of_a_drop(run, tmp_path, monkeypatch):
    import shutil

    import progdistill.experiment as experiment

    out = tmp_path / "copy"
    shutil.copytree(run[0], out)
    assert "Shaded: the teacher's sharp drop." in (out / "report.md").read_text()

    def no_transition(*args, **kwargs):
        raise ValueError("'accuracy' never rises: no phase transition to detect")

    monkeypatch.setattr(experiment, "detect_phases", no_transition)
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "(No phase transition was detected.)" in text and "Shaded: the teacher's sharp drop." not in text



def test_a_flat_teacher_is_a_problem_even_with_a_drop_detected_in_its_noise():
    from progdistill.report.health import teacher_health

    flat = [{"step": s, "loss": 0.69, "accuracy": a} for s, a in ((0, 0.503), (500, 0.496), (1000, 0.507))]
    noise = {"drop_start": 389, "drop_end": 510, "middle": 450, "metric": "accuracy"}
    problems, facts = teacher_health({"teacher": {"curve": flat, "phases": noise}})
    assert len(problems) == 1 and problems[0].startswith("the teacher never left its plateau (held-out accuracy "
                                                         "0.503 → 0.507)")
    assert not any("left its plateau" in f for f in facts)
    learnt = flat[:2] + [{"step": 1000, "loss": 0.01, "accuracy": 1.0}]
    problems, facts = teacher_health({"teacher": {"curve": learnt, "phases": noise}})
    assert problems == [] and facts[0].startswith("the teacher left its plateau (sharp drop at steps 389–510)")


def test_checkpoints_too_coarse_for_the_drop_are_a_problem_naming_the_fix():
    """A drop at steps 5,678–6,856 (1,178 wide) with checkpoints only at 0 and 10,000 (checkpoint_every
    20,000 on a 10,000-step teacher): no checkpoint resolves it. Suggested checkpoint_every: the largest
    1/2/5 x 10^k at most 1178 / 4 = 294.5, i.e. 200 (checkpoints 5,800, ..., 6,800: six in the drop)."""
    from progdistill.report.health import health, teacher_health

    learnt = [{"step": 0, "loss": 0.69, "accuracy": 0.5}, {"step": 10000, "loss": 0.01, "accuracy": 1.0}]
    drop = {"drop_start": 5678, "drop_end": 6856, "middle": 6200, "metric": "accuracy"}
    coarse = {"curve": learnt, "phases": drop, "checkpoints": [0, 10000]}
    problems, facts = teacher_health({"teacher": coarse})
    assert problems == [
        "no saved teacher checkpoint lies in its sharp drop (steps 5,678–6,856; the last before it at 0 and the first "
        "after it at 10,000), so the methods that learn from the drop (`progressive` from a phase, `two-shot` at a "
        "phase, `auto`) were taught by a checkpoint outside it and a progressive schedule jumps over it (save "
        "checkpoints more often: `teacher.checkpoint_every=200` puts at least 4 in the drop)"]
    assert facts[0].startswith("the teacher left its plateau (sharp drop at steps 5,678–6,856)")
    text = health({"teacher": coarse, "methods": {}}, {}, 1)
    assert text.startswith("**Run health: read the numbers with care.** No saved teacher checkpoint lies in its "
                           "sharp drop")
    # the boundary: a checkpoint at either end of the drop resolves it (both ends included); one step
    # outside either end does not
    for inside in ([0, 5678, 10000], [0, 6856, 10000], [0, 6000, 10000]):
        assert teacher_health({"teacher": {**coarse, "checkpoints": inside}})[0] == [], inside
    problems, _ = teacher_health({"teacher": {**coarse, "checkpoints": [0, 5677, 6857, 10000]}})
    assert "(steps 5,678–6,856; the last before it at 5,677 and the first after it at 6,857)" in problems[0]
    problems, _ = teacher_health({"teacher": {**coarse, "checkpoints": [7000, 10000]}})  # none before the drop
    assert "(steps 5,678–6,856; the first after it at 7,000)" in problems[0]
    # a teacher that never left its plateau: that is the problem, not where its checkpoints lie
    flat = [{**p, "accuracy": 0.5} for p in learnt]
    problems, _ = teacher_health({"teacher": {**coarse, "curve": flat}})
    assert len(problems) == 1 and problems[0].startswith("the teacher never left its plateau")


def test_the_suggested_checkpoint_interval_puts_enough_checkpoints_in_any_drop_by_brute_force():
    from progdistill.report.health import DROP_CHECKPOINTS, suggested_checkpoint_every

    nice = sorted(m * 10**e for e in range(7) for m in (1, 2, 5))
    assert [suggested_checkpoint_every(w) for w in (0, 3, 4, 7, 8, 19, 20, 1178, 4000, 39999)] == [
        1, 1, 1, 1, 2, 2, 5, 200, 1000, 5000]
    for width in range(0, 3001, 7):
        every = suggested_checkpoint_every(width)
        assert every in nice
        bigger = nice[nice.index(every) + 1]
        assert every == 1 or every <= width / DROP_CHECKPOINTS < bigger  # the largest that fits
        if width >= DROP_CHECKPOINTS:
            for start in range(0, 2 * every + 1):  # every position of the drop against the checkpoint grid
                count = sum(1 for s in range(0, start + width + every, every) if start <= s <= start + width)
                assert count >= DROP_CHECKPOINTS, (width, start, every)


def test_methods_table_says_where_a_phase_named_checkpoint_lies_outside_the_drop():
    """Checkpoints 0 and 10,000 and a drop at 5,678–6,856: `progressive` from drop_start starts at the
    nearest saved checkpoint, 10,000, after the drop; `two-shot` at the middle (6,200) and `auto` use
    10,000 too. With a checkpoint every 500, drop_start snaps to 5,500 (the usual rounding: 6,000 and
    6,500 lie in the drop), and the middle to 6,000, inside it."""
    from progdistill.report.methods import resolved

    curve = [{"step": s, "loss": 0.1, "accuracy": 0.5 if s < 6000 else 1.0} for s in range(0, 10001, 500)]
    drop = {"drop_start": 5678, "drop_end": 6856, "middle": 6200, "metric": "accuracy"}

    def summary(saved):
        return {"teacher": {"curve": curve, "checkpoints": saved, "phases": drop}}

    one = {"300": {"seeds": {"0": {"teacher_checkpoints": [10000]}}}}
    text = resolved({"name": "progressive", "start": "drop_start"}, one, summary([0, 10000]))
    assert text.startswith("from teacher step 10,000 (the saved checkpoint nearest the start of the drop at 5,678: "
                           "10,000, after the drop's end at 6,856), s = 1, ")
    assert text.endswith("; 1 checkpoint, 10,000 to 10,000")
    text = resolved({"name": "two-shot", "checkpoint": "middle", "switch": 100}, one, summary([0, 10000]))
    assert text == ("checkpoint 10,000 (the saved checkpoint nearest the middle of the drop at 6,200: 10,000, after "
                    "the drop's end at 6,856, teacher accuracy 1.000) for steps 0–99, then 10,000")
    text = resolved({"name": "auto", "switch": 100}, one, summary([0, 10000]))
    assert text.startswith("checkpoint 10,000 (teacher accuracy 1.000) (the saved checkpoint nearest the middle of "
                           "the drop at 6,200: 10,000, after the drop's end at 6,856), then 10,000")
    text = resolved({"name": "two-shot", "checkpoint": "before", "switch": 100}, one, summary([6000, 10000]))
    assert text.startswith("checkpoint 6,000 (no saved checkpoint before the drop's start at 5,678: the first one, "
                           "6,000, teacher accuracy 1.000)")
    every500 = list(range(0, 10001, 500))
    two = {"300": {"seeds": {"0": {"teacher_checkpoints": [5500, 6000]}}}}
    text = resolved({"name": "progressive", "start": "drop_start"}, two, summary(every500))
    assert text.startswith("from teacher step 5,500 (the start of the drop), s = 1, ")
    assert text.endswith("; 2 checkpoints, 5,500 to 6,000")
    text = resolved({"name": "two-shot", "checkpoint": "middle", "switch": 100}, two, summary(every500))
    assert text.startswith("checkpoint 6,000 (the middle of the drop, teacher accuracy 1.000)")


def test_monomial_verdicts_say_where_the_transition_window_lies_and_call_a_spike_by_its_ratio():
    """Hand-built probe rows around a drop at 600–800 (window 400–800, the drop widened by its width before
    it): in-support 0.04 at step 500 over off-support 0.01 is a spike (4x >= 3); 0.02 over 0.01 is none,
    and the verdict says which steps it looked at and why that window."""
    from progdistill.config import load_recipe
    from progdistill.probes.monomials import monomial_peak, transition_window
    from progdistill.report.curriculum import monomial_verdict

    phases = {"drop_start": 600, "drop_end": 800, "middle": 700}
    window = transition_window(phases)
    assert window == (400, 800)

    def rows(peak_in: float) -> list[dict]:
        ins = {0: 0.001, 200: 0.03, 500: peak_in, 1000: 0.002}  # 200: before the window, higher than 0.02
        return [{"step": s, "accuracy": 0.5 if s < 800 else 1.0,
                 "result": {"degrees": {"1": {"in_mean": v, "off_mean": 0.01}}}} for s, v in ins.items()]

    recipe = load_recipe("parity-mlp-small")
    for peak_in, spike in ((0.04, True), (0.02, False)):
        r = rows(peak_in)
        peak = {"transition": monomial_peak(r, "1", window), "whole_trajectory": monomial_peak(r, "1")}
        text = monomial_verdict(r, peak, phases, recipe)
        if spike:
            assert text.startswith("**A spike.** The teacher's degree-1 in-support correlations peak around the "
                                   "transition (steps 400–800: the sharp drop, widened by its own width before it, "
                                   "where a spike starts) at step 500, before the sharp drop (teacher accuracy "
                                   "0.500), at 4.0× the off-support ones (0.0400 vs 0.0100), and fall to 0.0020"), text
        else:
            assert text.startswith("**No spike.** Around the transition (steps 400–800: the sharp drop, widened by "
                                   "its own width before it, where a spike starts) the degree-1 in-support "
                                   "correlations reach at most 0.0200 (step 500, teacher accuracy 0.500), only 2.0× "
                                   "the off-support ones (0.0100); over the whole trajectory they are highest at step "
                                   "200, before the sharp drop. Likely reason: with d = 50"), text



# RECIPE with a teacher that never learns (lr 1e-9), smaller, and methods of which two need the phases
FLAT = ["name=flat-teacher", "teacher.optim.lr=1e-9", "teacher.steps=400", "teacher.model.width=64",
        "probe.monomials.samples=2048", "students.steps=[300]", "students.seeds=[0]", "students.sweep=null",
        "students.methods=[ce, {name: progressive, speed: 4, label: fast}, {name: two-shot, checkpoint: middle, "
        "switch: 100}, auto]"]


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory):
    """A run whose teacher never learns (lr 1e-9: no phase transition is detected) with two methods that
    need the phases (`two-shot` at the middle of the drop, `auto`): `progdistill run` trains and probes the
    teacher, then refuses the students; `progdistill report` reports on what there is."""
    root = tmp_path_factory.mktemp("flat")
    (root / "flat.yaml").write_text(RECIPE)
    out = root / "run"
    assert main(["run", str(root / "flat.yaml"), *FLAT, "--out", str(out), "--quiet"]) != 0
    assert not (out / "students").exists() and (out / "probes" / "teacher_monomials.json").is_file()
    assert main(["report", str(out)]) == 0
    return out, (out / "report.md").read_text()


def _paragraph(text: str, start: str) -> str:
    found = [p for p in text.split("\n\n") if p.startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def test_without_phases_the_report_says_why_no_student_ran_and_the_command_it_suggests_runs(flat_run, tmp_path):
    import shlex

    out, text = flat_run
    assert "No student has finished yet" not in text
    assert text.split("\n\n")[1] == ("No student was trained: `two-shot` and `auto` need the teacher's phase "
                                     "transition, none was detected, so `progdistill run` refuses the students (what "
                                     "to do: Results). The teacher's part is below.")
    results = _paragraph(text, "No student was trained. ")
    assert results.startswith("No student was trained. The methods `two-shot` and `auto` start from the teacher's "
                              "phase transition"), results
    command = re.findall(r"`(progdistill run [^`]*)`", results)
    assert command == ["progdistill run RUN/config.yaml teacher.path=RUN/teacher "
                       "'students.methods=[ce, {name: progressive, label: fast, speed: 4.0}]' --out NEW"]
    assert results.endswith("; or train the teacher until it learns (more `teacher.steps`, or a larger "
                            "`teacher.optim.lr`) and run again in a new folder.")
    # the suggestion, as a shell would split it, trains the students on this run's teacher
    argv = [a.replace("RUN", str(out)).replace("NEW", str(tmp_path / "new")) for a in shlex.split(command[0])]
    assert main(argv[1:] + ["--quiet"]) == 0
    summary = json.loads((tmp_path / "new" / "summary.json").read_text())
    assert sorted(summary["methods"]) == ["ce", "fast"]
    assert summary["teacher"]["checkpoints"] == list(range(0, 401, 50))


def test_without_phases_the_teacher_caption_shades_nothing(flat_run):
    caption = _paragraph(flat_run[1], "*Teacher's held-out accuracy")
    assert caption == ("*Teacher's held-out accuracy and loss (log scale) over its training steps (no phase "
                       "transition was detected, so no drop is shaded).*")


def test_without_phases_the_monomial_verdict_expects_no_spike_and_gives_no_transition_reasons(flat_run):
    verdict = _paragraph(flat_run[1], "**No spike.**")
    assert ("The teacher had no phase transition (none was detected; Teacher, above), so no spike is expected: the "
            "spike belongs to the transition's checkpoints.") in verdict
    assert "Likely reason" not in verdict and "transition comes" not in verdict and "plateau" not in verdict
