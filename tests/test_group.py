"""Students trained together as one batched model (group.train_group) against students trained alone."""

import json

import pytest
import torch

from progdistill.batched import Stack, StackedOptimizer
from progdistill.grammar import generate_grammar
from progdistill.group import (Member, StackedModel, balance_groups, makespan, memory_per_student, plan_groups,
                               train_group)
from progdistill.io import read_json
from progdistill.models import build_model, resolve_architecture
from progdistill.models.mlp import MLP as MLPModel
from progdistill.models.transformer import BertMLM, GPTClassifier
from progdistill.schedule import make_schedule
from progdistill.tasks import ParityTask
from progdistill.tasks.pcfg import PCFGMLMTask
from progdistill.teacher_outputs import TeacherOutputs
from progdistill.trainer import KDConfig, OptimConfig, TrainConfig, train
from progdistill.trajectory import Trajectory

MLP = {"type": "mlp", "input_dim": 12, "num_classes": 2, "width": 32}
ADAMW = OptimConfig(name="adamw", lr=5e-3, betas=(0.9, 0.95), weight_decay=0.01, schedule="cosine", warmup=0.06,
                    grad_clip=0.5)
# (method, budget, data seed): mixed methods, budgets and seeds in one group
STUDENTS = [({"name": "ce"}, 100, 1), ({"name": "one-shot"}, 60, 1), ({"name": "progressive", "refresh": 20}, 100, 2),
            ({"name": "adaptive", "patience": 1, "min_delta": 0.02}, 80, 2),
            ({"name": "two-shot", "checkpoint": 40, "switch": 30}, 100, 1)]


def fresh(seed, arch):
    torch.manual_seed(seed)
    return build_model(arch)


def members(root, tasks, trajectory, arch, optim, kd=KDConfig(), batch_size=8, cache=True, students=STUDENTS):
    out = []
    for i, (method, budget, seed) in enumerate(students):
        cfg = TrainConfig(steps=budget, batch_size=batch_size, optim=optim, kd=kd, eval_every=10)
        out.append(Member(fresh(100 + i, arch), tasks[seed], cfg, root / f"student-{i}", {"model": arch},
                          make_schedule(method, trajectory.steps, None, budget=budget),
                          root.parent / f"cache-{seed}" if cache else None, f"student {i}"))
    return out


def alone(group, trajectory):
    """Each member trained by trainer.train, one after the other."""
    return [train(m.model, m.task, m.cfg, m.out, m.meta, m.schedule, trajectory, progress=False,
                  teacher_cache=m.teacher_cache) for m in group]


def max_difference(a, b):
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.model.parameters(), b.model.parameters()))


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    tasks = {seed: ParityTask(d=12, k=2, eval_size=256, data_seed=seed) for seed in (0, 1, 2)}
    train(fresh(5, MLP), tasks[0], TrainConfig(steps=120, batch_size=16, optim=OptimConfig(lr=0.1), eval_every=20,
                                               checkpoint_every=20), root / "teacher", {"model": MLP}, progress=False)
    return root, tasks, Trajectory(root / "teacher")


@pytest.mark.parametrize("optim, kd", [(ADAMW, KDConfig()), (OptimConfig(name="sgd", lr=0.1, momentum=0.9), KDConfig()),
                                       (OptimConfig(name="adam", lr=3e-3, weight_decay=0.01), KDConfig(alpha=0.5, tau=2.0))])
def test_mlp_group_with_a_resume_matches_students_trained_alone(parity, optim, kd, tmp_path):
    _, tasks, trajectory = parity
    single = members(tmp_path / "alone", tasks, trajectory, MLP, optim, kd)
    records = alone(single, trajectory)
    train_group(members(tmp_path / "group", tasks, trajectory, MLP, optim, kd), trajectory, progress=False,
                stop_at=45, state_seconds=0)
    assert sorted(p.name for p in (tmp_path / "group" / "student-0" / "state").iterdir()) == [
        "model-45.safetensors", "optimizer-45.safetensors", "rng-45.safetensors", "state.json"]
    group = members(tmp_path / "group", tasks, trajectory, MLP, optim, kd)  # a new process: other init, state wins
    for m in group:
        torch.nn.init.normal_(next(m.model.parameters()))
    resumed = train_group(group, trajectory, progress=False)
    for a, b, ra, rb in zip(single, group, records, resumed):
        assert max_difference(a, b) <= 1e-5
        assert ra["supervision"] == rb["supervision"]
        assert [p["accuracy"] for p in ra["curve"]] == [p["accuracy"] for p in rb["curve"]]
        assert [p["loss"] for p in ra["curve"]] == pytest.approx([p["loss"] for p in rb["curve"]], rel=1e-6, abs=1e-7)
        assert read_json(b.out / "curve.json") == rb["curve"] and read_json(b.out / "supervision.json") == rb["supervision"]
        assert Trajectory(b.out).steps == [b.cfg.steps] and not (b.out / "state").exists()
        # metrics.jsonl: the same lines, the training losses (across the resume) as the member alone had them
        lines_a, lines_b = ([json.loads(x) for x in (m.out / "metrics.jsonl").read_text().splitlines()] for m in (a, b))
        assert [x["step"] for x in lines_a] == [x["step"] for x in lines_b] == [p["step"] for p in rb["curve"]]
        for x, y in zip(lines_a, lines_b):
            for key in ("train/loss", "train/kd_loss"):
                assert (x[key] is None) == (y[key] is None) and (x[key] is None or abs(x[key] - y[key]) <= 1e-5), key
    assert len(records[3]["supervision"]) > 1  # the adaptive schedule did move on its own evaluations


def test_bert_group_with_a_resume_matches_students_trained_alone(tmp_path):
    grammar = generate_grammar(levels=3, rhs_lengths=(2,), seed=0)  # sentences of one length: no padding
    tasks = {seed: PCFGMLMTask(grammar, eval_size=32, seed=1, data_seed=seed) for seed in (0, 1, 2)}
    io = tasks[0].model_io()
    teacher_arch = resolve_architecture({"type": "bert", "layers": 1, "heads": 2, "head_dim": 8}, io)
    train(fresh(5, teacher_arch), tasks[0], TrainConfig(steps=40, batch_size=16, optim=ADAMW, eval_every=20,
                                                        checkpoint_every=20), tmp_path / "teacher",
          {"model": teacher_arch}, progress=False)
    trajectory = Trajectory(tmp_path / "teacher")
    arch = resolve_architecture({"type": "bert", "layers": 2, "heads": 2, "head_dim": 8}, io)
    students = [({"name": "ce"}, 100, 1), ({"name": "one-shot"}, 70, 1), ({"name": "two-shot", "checkpoint": 20,
                                                                          "switch": 40}, 100, 2)]
    single = members(tmp_path / "alone", tasks, trajectory, arch, ADAMW, students=students)
    alone(single, trajectory)
    train_group(members(tmp_path / "group", tasks, trajectory, arch, ADAMW, students=students), trajectory,
                progress=False, stop_at=35, state_seconds=0)
    group = members(tmp_path / "group", tasks, trajectory, arch, ADAMW, students=students)
    train_group(group, trajectory, progress=False)
    for a, b in zip(single, group):
        assert max_difference(a, b) <= 1e-5
        curve_a, curve_b = read_json(a.out / "curve.json"), read_json(b.out / "curve.json")
        assert [sorted(p) for p in curve_a] == [sorted(p) for p in curve_b]
        for p, q in zip(curve_a, curve_b):
            assert {k: v for k, v in p.items()} == pytest.approx(q)


def test_a_member_state_resumes_alone_and_a_group_resumes_bit_identically(parity, tmp_path):
    _, tasks, trajectory = parity
    whole = members(tmp_path / "whole", tasks, trajectory, MLP, ADAMW)
    train_group(whole, trajectory, progress=False)
    part = members(tmp_path / "part", tasks, trajectory, MLP, ADAMW)
    train_group(part, trajectory, progress=False, stop_at=60, state_seconds=0)  # student 1's budget is 60
    assert (part[1].out / "curve.json").is_file() and not (part[1].out / "state").exists()
    assert all(torch.equal(p, q) for p, q in zip(part[1].model.parameters(), whole[1].model.parameters()))
    state = read_json(tmp_path / "part" / "student-0" / "state" / "state.json")
    assert state["step"] == 60 and state["optimizer"]["param_groups"][0]["lr"] > 0
    one = members(tmp_path / "part", tasks, trajectory, MLP, ADAMW)[0]  # the first member goes on alone
    train(one.model, one.task, one.cfg, one.out, one.meta, one.schedule, trajectory, progress=False,
          teacher_cache=one.teacher_cache)
    assert max_difference(one, whole[0]) <= 1e-5
    rest = members(tmp_path / "part", tasks, trajectory, MLP, ADAMW)[2:]  # the others in a smaller group
    train_group(rest, trajectory, progress=False)
    for a, b in zip(whole[2:], rest):
        assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
        assert read_json(a.out / "curve.json") == read_json(b.out / "curve.json")


def test_padded_batches_of_other_widths_train_close_to_alone(tmp_path):
    grammar = generate_grammar(levels=2, seed=0)  # sentences of several lengths: batches of other widths
    tasks = {seed: PCFGMLMTask(grammar, eval_size=32, seed=1, data_seed=seed) for seed in (1, 2)}
    arch = resolve_architecture({"type": "bert", "layers": 1, "heads": 2, "head_dim": 8}, tasks[1].model_io())
    widths = {tasks[1].train_batch(s, 8).inputs.shape[1] - tasks[2].train_batch(s, 8).inputs.shape[1] for s in range(20)}
    assert widths != {0}
    sgd = OptimConfig(name="sgd", lr=0.1)
    trajectory = None
    students = [({"name": "ce"}, 40, 1), ({"name": "ce"}, 40, 2)]
    single = [Member(fresh(100 + i, arch), tasks[seed], TrainConfig(steps=budget, batch_size=8, optim=sgd, eval_every=20),
                     tmp_path / kind / f"s{i}", {"model": arch}, make_schedule(method, None, None), None, f"s{i}")
              for kind in ("alone", "group") for i, (method, budget, seed) in enumerate(students)]
    alone(single[:2], trajectory)
    train_group(single[2:], trajectory, progress=False)
    for a, b in zip(single[:2], single[2:]):
        assert max_difference(a, b) <= 1e-4  # padding changes the order of some sums: float rounding only


def test_teacher_outputs_are_computed_once_per_stream_checkpoint_and_step(parity, tmp_path, monkeypatch):
    _, tasks, trajectory = parity
    calls = []
    original = TeacherOutputs._compute

    def counted(self, checkpoint, batch):
        calls.append(checkpoint)
        return original(self, checkpoint, batch)

    monkeypatch.setattr(TeacherOutputs, "_compute", counted)
    students = [({"name": "one-shot"}, 30, 1), ({"name": "one-shot", "label": "again"}, 30, 1),
                ({"name": "two-shot", "checkpoint": 40, "switch": 10}, 30, 1), ({"name": "one-shot"}, 30, 2)]
    group = members(tmp_path, tasks, trajectory, MLP, ADAMW, students=students, cache=False)
    train_group(group, trajectory, progress=False)
    # seed 1: checkpoint 120 at every step (shared by three students), 40 for 10 steps; seed 2: 120
    assert calls.count(120) == 60 and calls.count(40) == 10 and len(calls) == 70


def test_stacked_model_and_optimizer_keep_each_model_apart():
    models = [fresh(s, MLP) for s in range(3)]
    stacked = StackedModel.of(models)
    x = torch.randn(3, 5, 12)
    assert torch.allclose(stacked(x)[1], models[1](x[1]), rtol=0, atol=1e-6)
    sub = stacked.select([2, 0])
    assert torch.allclose(sub(x[[2, 0]])[0], models[2](x[2]), rtol=0, atol=1e-6)
    params = Stack.pack([dict(m.named_parameters()) for m in models])
    opt = StackedOptimizer(ADAMW, params, params.zeros_like())
    state = opt.student_state(1, [{"lr": 0.1}])
    assert state["state"] == {}  # before the first step, as torch's optimizer
    with pytest.raises(ValueError, match="unknown optimizer"):
        # an optimizer the recipe checks would refuse, built unchecked: the stacked optimizer refuses it too
        StackedOptimizer(OptimConfig.model_construct(**{**ADAMW.model_dump(), "name": "lion"}), params,
                         params.zeros_like())
    with pytest.raises(ValueError, match="model 1 does not have the tensors of model 0"):
        Stack.pack([dict(models[0].named_parameters()), dict(fresh(0, {**MLP, "width": 8}).named_parameters())])


def test_group_refuses_members_it_cannot_stack(parity, tmp_path):
    _, tasks, trajectory = parity
    group = members(tmp_path, tasks, trajectory, MLP, ADAMW, students=STUDENTS[:2])
    group[1].model = fresh(0, {**MLP, "width": 8})
    with pytest.raises(ValueError, match="cannot train in a group with student 0"):
        train_group(group, trajectory, progress=False)
    group = members(tmp_path, tasks, trajectory, MLP, ADAMW, students=STUDENTS[:2])
    train_group(group[:1], trajectory, progress=False, stop_at=20, state_seconds=0)
    with pytest.raises(ValueError, match=r"members resume from different steps \[0, 20\]"):
        train_group(members(tmp_path, tasks, trajectory, MLP, ADAMW, students=STUDENTS[:2]), trajectory,
                    progress=False)


def test_makespan_and_balance_groups_by_hand():
    # costliest first onto the least loaded worker: 3 | 3, then 2 + 2 | 2 -> 3 + 2 + 2 = 7
    assert makespan([2, 3, 2, 3, 2], 2) == 7 and makespan([5], 4) == 5 and makespan([], 2) == 0
    # three equal groups of 8 on 2 workers take 2 group-times; splitting one in halves takes 1.5
    groups = [[("a", 1)] * 8, [("b", 1)] * 8, [("c", 1)] * 8]
    balanced = balance_groups(groups, lambda item: item[1], 2)
    assert sorted(len(g) for g in balanced) == [4, 4, 8, 8]
    assert makespan([len(g) for g in balanced], 2) == 12
    # already balanced: left alone; costliest first
    two = [[("x", 3)] * 2, [("y", 1)] * 5]
    assert balance_groups(two, lambda item: item[1], 2) == [[("x", 3)] * 2, [("y", 1)] * 5]
    # fewer groups than workers: split until every worker has one (a single item is never split)
    assert sorted(len(g) for g in balance_groups([[1, 1, 1, 1]], lambda item: item, 4)) == [1, 1, 1, 1]
    assert balance_groups([[7]], lambda item: item, 3) == [[7]]
    # one worker: nothing to gain
    assert balance_groups(groups, lambda item: item[1], 1) == groups


def test_plan_groups_caps_sizes_and_keeps_equal_keys_together():
    keys = [(b, s) for b in (300, 600) for s in (0, 1, 2)] * 3  # 18 students
    groups = plan_groups(keys, 8)
    assert [len(g) for g in groups] == [6, 6, 6]
    assert sorted(i for g in groups for i in g) == list(range(18))
    assert [sorted({keys[i] for i in g}) for g in groups] == [[(300, 0), (300, 1)], [(300, 2), (600, 0)],
                                                             [(600, 1), (600, 2)]]
    assert [len(g) for g in plan_groups(keys, 18)] == [18] and plan_groups([], 4) == []
    with pytest.raises(ValueError, match="size >= 1"):
        plan_groups(keys, 0)


def test_memory_per_student_counts_parameters_and_activations(parity):
    _, tasks, _ = parity
    small, wide = fresh(0, MLP), fresh(0, {**MLP, "width": 512})
    train_small, eval_small = memory_per_student(small, tasks[1], 8)
    train_wide, eval_wide = memory_per_student(wide, tasks[1], 8)
    assert 4 * 4 * sum(p.numel() for p in small.parameters()) < train_small < train_wide
    assert eval_small >= 256 * 32 * 4 and eval_wide > eval_small


TINY = """
name: tiny
threads: 1
task: {name: parity, d: 12, k: 2, eval_size: 256}
teacher:
  model: {type: mlp, width: 64}
  steps: 300
  batch_size: 16
  optim: {lr: 0.1}
  eval_every: 25
  checkpoint_every: 50
phases: {metric: accuracy}
students:
  model: {type: mlp, width: 16}
  steps: [100, 150]
  batch_size: 16
  optim: {lr: 0.1}
  eval_every: 25
  seeds: [0, 1]
  methods: [ce, progressive, {name: two-shot, checkpoint: middle, switch: 50}, adaptive]
report: {target: 0.9}
"""


def test_run_groups_students_with_the_numbers_of_one_at_a_time(tmp_path):
    import shutil

    from progdistill.cli import main
    from progdistill.config import load_recipe
    from progdistill.experiment import student_groups, student_jobs, teacher_phases, train_students

    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(TINY)
    one, grouped = tmp_path / "one", tmp_path / "grouped"
    assert main(["teacher", str(recipe_file), "--out", str(one), "--quiet"]) == 0
    shutil.copytree(one, grouped)
    assert main(["distill", str(recipe_file), "--out", str(one), "--quiet", "students.group_size=1"]) == 0
    # the grouped run is interrupted in its first group, then resumed under another group size
    recipe = load_recipe(str(recipe_file), ["students.group_size=5"])
    trajectory = Trajectory(grouped / "teacher")
    phases = teacher_phases(recipe, trajectory, grouped)
    groups, _ = student_groups(recipe, grouped, trajectory, phases, student_jobs(recipe, trajectory))
    assert sorted(len(g) for g in groups) == [4, 4, 4, 4]  # 16 students, at most 5 a group
    default = load_recipe(str(recipe_file), ["workers=1"])  # MLP students: groups of up to 16 by default
    assert [len(g) for g in student_groups(default, grouped, trajectory, phases, student_jobs(default, trajectory))[0]] == [16]
    assert len({b for _, b, _ in groups[0]}) == 1  # one budget: they leave together
    assert len({seed for _, _, seed in groups[0]}) == 1  # one seed: they share each step's batch
    assert train_students(recipe, grouped, trajectory, phases, groups[0], progress=False, stop_at=40) == []
    assert len(list(grouped.glob("students/*/*/*/state/state.json"))) == len(groups[0])
    assert main(["distill", str(recipe_file), "--out", str(grouped), "--quiet", "students.group_size=7"]) == 0
    for folder in (one, grouped):
        assert main(["report", str(folder)]) == 0
    assert read_json(one / "summary.json")["methods"] == read_json(grouped / "summary.json")["methods"]
    capped = load_recipe(str(recipe_file), ["students.group_memory_mb=1", "students.seeds=[0, 1, 2]"])
    assert all(len(g) == 1 for g in student_groups(capped, grouped, trajectory, phases,
                                                   student_jobs(capped, trajectory))[0])


def test_students_of_padded_tasks_are_grouped_by_seed(tmp_path):
    from progdistill.cli import main
    from progdistill.config import load_recipe
    from progdistill.experiment import student_groups, student_jobs, teacher_phases

    recipe_file = tmp_path / "mlm.yaml"
    recipe_file.write_text("""
name: mlm
threads: 1
task: {name: pcfg-mlm, grammar: {generate: {levels: 2, seed: 0}}, eval_size: 32}
teacher: {model: {type: bert, layers: 1, heads: 2, head_dim: 8}, steps: 20, batch_size: 8, eval_every: 10,
          checkpoint_every: 10}
students: {model: {type: bert, layers: 1, heads: 1, head_dim: 8}, steps: [20, 30], batch_size: 8, seeds: [0, 1],
           methods: [ce, one-shot, {name: two-shot, checkpoint: 10, switch: 10}]}
""")
    assert main(["teacher", str(recipe_file), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    trajectory = Trajectory(tmp_path / "run" / "teacher")

    def groups_of(recipe):
        phases = teacher_phases(recipe, trajectory, tmp_path / "run")
        return student_groups(recipe, tmp_path / "run", trajectory, phases, student_jobs(recipe, trajectory))[0]

    # by default BERT students on a CPU train one at a time: a group is not faster there
    assert [len(g) for g in groups_of(load_recipe(str(recipe_file)))] == [1] * 12
    groups = groups_of(load_recipe(str(recipe_file), ["students.group_size=16"]))
    # sentences of several lengths: a group holds one seed, whose batches have one width (no padding)
    assert sorted((len(g), {seed for _, _, seed in g}) for g in groups) == [(6, {0}), (6, {1})]


def test_grouping_pays_for_mlps_and_for_transformers_only_on_a_gpu():
    from progdistill.group import grouping_pays

    assert grouping_pays(MLPModel(8, 2, 16))
    bert = BertMLM(vocab_size=10, seq_len=4, layers=1, heads=1, head_dim=4)
    assert not grouping_pays(bert)
    assert not grouping_pays(GPTClassifier(seq_len=4, num_classes=2, layers=1, heads=1, head_dim=4))
    if torch.cuda.is_available():
        assert grouping_pays(bert.cuda())


def test_bf16_autocast_group_matches_students_trained_alone(tmp_path):
    grammar = generate_grammar(levels=3, rhs_lengths=(2,), seed=0)
    task = PCFGMLMTask(grammar, eval_size=32, seed=1, data_seed=1)
    arch = resolve_architecture({"type": "bert", "layers": 1, "heads": 2, "head_dim": 8}, task.model_io())
    cfg = TrainConfig(steps=30, batch_size=16, optim=ADAMW, precision="bf16", eval_every=10)

    def two(folder):
        return [Member(fresh(i, arch), task, cfg, tmp_path / folder / f"s{i}", {"model": arch},
                       make_schedule({"name": "ce"}, None, None), None, f"s{i}") for i in range(2)]

    single, group = two("alone"), two("group")
    alone(single, None)
    train_group(group, None, progress=False)
    for a, b in zip(single, group):
        assert max_difference(a, b) <= 1e-5
        assert all(p.dtype == torch.float32 for p in b.model.parameters())
