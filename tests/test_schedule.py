import pytest

from progdistill.schedule import (Adaptive, Auto, Progressive, fitted_speed, make_schedule, progressive_checkpoint,
                                  resolve_checkpoint)
from progdistill.trajectory import Phases

SAVED = [0, 100, 200, 300, 500, 800, 1000]


@pytest.mark.parametrize(
    "step, speed, refresh, expected",
    [
        (0, 1, 100, 100),      # target s*R*(1+0) = 100: saved exactly
        (99, 1, 100, 100),     # same refresh window
        (100, 1, 100, 200),    # next window: target 200
        (250, 1, 100, 300),    # target 300
        (300, 1, 100, 500),    # target 400: first saved at or after is 500
        (450, 1, 100, 500),    # target 500
        (500, 1, 100, 800),    # target 600 -> 800
        (950, 1, 100, 1000),   # target 1000
        (5000, 1, 100, 1000),  # beyond the final one: clamp
        (0, 2, 100, 200),      # speed 2: target 200
        (150, 2, 100, 500),    # target 2*100*2 = 400 -> 500
        (0, 1, 250, 300),      # refresh 250: target 250 -> 300
        (260, 1, 250, 500),    # target 500
        (0, 0.5, 100, 100),    # target 50 -> 100
    ],
)
def test_progressive_rule_table(step, speed, refresh, expected):
    assert progressive_checkpoint(step, SAVED, speed, refresh) == expected


def test_progressive_start_offset_and_default_refresh():
    assert progressive_checkpoint(0, SAVED, 1, 100, start=300) == 500
    sched = make_schedule({"name": "progressive"}, SAVED, None)
    assert sched.refresh == 200  # last checkpoint interval


@pytest.mark.parametrize("budget, reach, refresh, first_final", [
    (600, 1.0, 100, 500),   # 6 intervals: speed 1000/600; the final teacher takes the last interval
    (600, 0.5, 100, 200),   # reach the final one by mid-budget: the interval holding step 299
    (250, 1.0, 100, 200),   # budget not a multiple of refresh: 3 intervals, last one from 200
    (300, 0.7, 50, 200),    # ceil(210 / 50) = 5 intervals: from step 200
])
def test_progressive_fit_reaches_the_final_checkpoint_on_time(budget, reach, refresh, first_final):
    saved = list(range(0, 1100, 100))
    sched = make_schedule({"name": "progressive", "speed": "fit", "reach": reach, "refresh": refresh},
                          saved, None, budget=budget)
    path = [sched.checkpoint(t) for t in range(budget)]
    assert path.index(1000) == first_final and set(path[first_final:]) == {1000}
    assert path == sorted(path) and path[0] < 1000  # advances monotonically, starts early


def test_progressive_fit_from_a_later_start_visits_every_checkpoint_once():
    saved = list(range(0, 850, 50))  # 0, 50, ..., 800
    sched = make_schedule({"name": "progressive", "speed": "fit", "start": 200}, saved, None, budget=600)
    path = [sched.checkpoint(t) for t in range(600)]
    assert sorted(set(path)) == list(range(250, 850, 50))  # no checkpoint skipped by float error
    assert all(path[t] == 250 + 50 * (t // 50) for t in range(600))
    with pytest.raises(ValueError, match="budget"):
        make_schedule({"name": "progressive", "speed": "fit"}, saved, None)


def test_fixed_schedules_and_two_shot():
    assert make_schedule({"name": "ce"}, None, None).checkpoint(5) is None
    assert make_schedule({"name": "one-shot"}, SAVED, None).checkpoint(5) == 1000
    two = make_schedule({"name": "two-shot", "checkpoint": 480, "switch": 50}, SAVED, None)
    assert [two.checkpoint(t) for t in (0, 49, 50, 10_000)] == [500, 500, 1000, 1000]
    assert resolve_checkpoint(1000, SAVED, None) == 1000
    with pytest.raises(ValueError, match="past the teacher's last saved step"):
        make_schedule({"name": "two-shot", "checkpoint": 1001, "switch": 50}, SAVED, None)


def test_phase_references():
    phases = Phases(drop_start=250, drop_end=790, middle=520, metric="loss")
    assert resolve_checkpoint("before", SAVED, phases) == 200
    assert resolve_checkpoint("middle", SAVED, phases) == 500
    assert resolve_checkpoint("after", SAVED, phases) == 800
    assert resolve_checkpoint("final", SAVED, phases) == 1000
    with pytest.raises(ValueError, match="checkpoint 'middle' needs the teacher's phases, which were not detected"):
        resolve_checkpoint("middle", SAVED, None)


def test_adaptive_advances_on_plateau_only():
    sched = Adaptive(SAVED, start=100, patience=2, min_delta=0.01)
    for acc in (0.5, 0.6, 0.7):  # improving: stays
        sched.observe(0, {"accuracy": acc})
    assert sched.checkpoint(0) == 100
    sched.observe(0, {"accuracy": 0.7})
    sched.observe(0, {"accuracy": 0.705})  # two evaluations without a gain of 0.01
    assert sched.checkpoint(0) == 200
    state = sched.state_dict()
    again = Adaptive(SAVED, start=100, patience=2, min_delta=0.01)
    again.load_state_dict(state)
    assert again.checkpoint(0) == 200


def test_auto_switches_when_caught_up_or_at_latest():
    curve = [{"step": s, "accuracy": a} for s, a in ((0, 0.5), (500, 0.8), (1000, 1.0))]
    phases = Phases(drop_start=300, drop_end=700, middle=480, metric="accuracy")
    sched = make_schedule({"name": "auto"}, SAVED, phases, curve, budget=4000)
    assert isinstance(sched, Auto) and sched.checkpoint(0) == 500
    sched.observe(0, {"accuracy": 0.5})  # the initial evaluation never switches
    sched.observe(100, {"accuracy": 0.79})  # within tolerance 0.02 of 0.8
    assert sched.switched_at == 100 and sched.checkpoint(101) == 1000
    lazy = make_schedule({"name": "auto"}, SAVED, phases, curve, budget=4000)
    assert lazy.checkpoint(1999) == 500 and lazy.checkpoint(2000) == 1000  # latest = half the budget
    lazy.observe(0, {"accuracy": 0.5})
    lazy.observe(2500, {"accuracy": 0.8})  # caught up only after the forced switch
    assert lazy.switched_at == 2000  # the step the student actually changed teacher


def test_auto_plateau_switch_needs_half_the_way_covered():
    """A plateau switches only after the student has covered half the way from its first accuracy to
    its checkpoint's (0.5 -> 0.8: at 0.65): a student stuck at 0.55 keeps its checkpoint until `latest`;
    one that plateaus at 0.7 switches after `patience` (3) evaluations without a gain of `min_delta`."""
    curve = [{"step": s, "accuracy": a} for s, a in ((0, 0.5), (500, 0.8), (1000, 1.0))]
    phases = Phases(drop_start=300, drop_end=700, middle=480, metric="accuracy")
    stuck = make_schedule({"name": "auto"}, SAVED, phases, curve, budget=20000)
    halfway = make_schedule({"name": "auto"}, SAVED, phases, curve, budget=20000)
    for i in range(40):  # evaluations every 100 steps up to step 3900
        stuck.observe(100 * i, {"accuracy": 0.5 if i == 0 else 0.55})
        halfway.observe(100 * i, {"accuracy": 0.5 if i == 0 else 0.7})
    assert stuck.switched_at is None and stuck.checkpoint(9999) == 500 and stuck.checkpoint(10000) == 1000
    assert halfway.switched_at == 400 and halfway.checkpoint(400) == 1000


def test_progressive_rule_defaults_and_rounding():
    """c(t) with the defaults speed 1, refresh 1, start 0: target t + 1; targets are rounded to 6
    decimals (so float error never skips a checkpoint) but not to whole steps."""
    ten = list(range(11))
    assert [progressive_checkpoint(t, ten) for t in (0, 4, 9, 20)] == [1, 5, 10, 10]
    assert progressive_checkpoint(0, ten, 0.5) == 1  # target 0.5: the first saved at or after it
    assert progressive_checkpoint(0, ten, 1.0000004) == 1  # 1.0000004 rounds to 1.0
    assert progressive_checkpoint(0, ten, 1.000004) == 2
    assert Progressive(ten, 1.0, 1).checkpoint(0) == 1  # start defaults to 0


def test_default_refresh_is_the_last_checkpoint_interval():
    for saved, refresh in (([300], 300), ([0], 1), ([9, 10], 1), ([50, 100], 50), ([0, 100, 300], 200)):
        assert make_schedule({"name": "progressive"}, saved, None).refresh == refresh
    explicit = make_schedule({"name": "progressive", "refresh": 50}, SAVED, None)
    assert explicit.refresh == 50 and explicit.checkpoint(0) == 100 and explicit.checkpoint(50) == 100


def test_progressive_starts_from_step_zero_or_a_phase():
    later = [50, 100, 150, 200]  # the first saved checkpoint is not step 0: start 0 still means step 0
    assert [make_schedule({"name": "progressive"}, later, None).checkpoint(t) for t in (0, 50, 100)] == [50, 100, 150]
    phases = Phases(drop_start=290, drop_end=790, middle=520, metric="loss")
    sched = make_schedule({"name": "progressive", "start": "drop_start", "refresh": 100}, SAVED, phases)
    assert sched.start == 300 and sched.checkpoint(0) == 500  # target 300 + 100 = 400 -> 500


def test_fitted_speed_closed_form():
    """speed = (final - start) / (refresh * max(1, ceil(reach * budget / refresh))), at least 1 / (...)."""
    saved = list(range(0, 1100, 100))
    assert fitted_speed(saved, 0, 100, 600) == pytest.approx(1000 / 600)  # reach defaults to 1
    assert fitted_speed(saved, 0, 100, 50) == pytest.approx(1000 / 100)  # one interval
    assert fitted_speed([0, 100], 100, 10, 50) == pytest.approx(1 / 50)  # already at the final one


def test_phase_references_at_the_edges():
    """'before' is strictly before the drop start, 'after' strictly after the drop end; with nothing
    there, the first / final checkpoint; drop_start and drop_end are the nearest saved steps."""
    on_saved = Phases(drop_start=300, drop_end=800, middle=500, metric="loss")
    assert [resolve_checkpoint(r, SAVED, on_saved) for r in ("before", "drop_start", "drop_end", "after")] == \
        [200, 300, 800, 1000]
    edges = Phases(drop_start=0, drop_end=1000, middle=500, metric="loss")
    assert resolve_checkpoint("before", SAVED, edges) == 0 and resolve_checkpoint("after", SAVED, edges) == 1000
    near = Phases(drop_start=140, drop_end=760, middle=500, metric="loss")
    assert resolve_checkpoint("drop_start", SAVED, near) == 100 and resolve_checkpoint("drop_end", SAVED, near) == 800
    with pytest.raises(ValueError, match=r"^unknown checkpoint reference 'halfway'; use a step or one of \("):
        resolve_checkpoint("halfway", SAVED, on_saved)
    with pytest.raises(ValueError, match=r"^checkpoint 1001 is past the teacher's last saved step \(1000\)$"):
        resolve_checkpoint(1001, SAVED, None)
    # a method's `start` is named as such, not as a "checkpoint"
    with pytest.raises(ValueError, match=r"^start 'drop_start' needs the teacher's phases, which were not detected$"):
        make_schedule({"name": "progressive", "start": "drop_start"}, SAVED, None)
    with pytest.raises(ValueError, match=r"^start 1001 is past the teacher's last saved step \(1000\)$"):
        make_schedule({"name": "adaptive", "start": 1001}, SAVED, None)


def test_method_options_reach_the_schedules():
    """Every option of a method entry is used (not its default) and phase references resolve."""
    phases = Phases(drop_start=250, drop_end=790, middle=520, metric="loss")
    two = make_schedule({"name": "two-shot", "checkpoint": "middle", "switch": 10}, SAVED, phases)
    assert (two.intermediate, two.final, two.switch) == (500, 1000, 10)
    adaptive = make_schedule({"name": "adaptive", "start": "before", "patience": 2, "min_delta": 0.1}, SAVED, phases)
    assert isinstance(adaptive, Adaptive) and adaptive.checkpoint(0) == 200
    assert (adaptive.tracker.patience, adaptive.tracker.min_delta) == (2, 0.1)
    assert make_schedule({"name": "adaptive"}, [50, 100], None).checkpoint(0) == 50  # start 0: the nearest
    auto = make_schedule({"name": "auto", "tolerance": 0.1, "patience": 5, "min_delta": 0.05, "latest": 0.25},
                         SAVED, phases, [{"step": 500, "accuracy": 0.8}], budget=4000)
    assert (auto.tolerance, auto.tracker.patience, auto.tracker.min_delta, auto.latest) == (0.1, 5, 0.05, 1000)
    auto.observe(0, {"accuracy": 0.5})
    auto.observe(100, {"accuracy": 0.71})  # within tolerance 0.1 of 0.8
    assert auto.switched_at == 100
    fixed = make_schedule({"name": "auto", "switch": 300}, SAVED, phases, budget=4000)
    assert [fixed.checkpoint(t) for t in (0, 299, 300)] == [500, 500, 1000]
    no_budget = make_schedule({"name": "auto"}, SAVED, phases)
    assert no_budget.checkpoint(10**9) == 500  # no latest switch without a budget
    no_curve = make_schedule({"name": "auto"}, SAVED, phases, None, budget=4000)
    no_curve.observe(0, {"accuracy": 0.5})
    no_curve.observe(100, {"accuracy": 0.97})
    assert no_curve.switched_at is None  # without the teacher's curve its accuracy is taken as 1.0
    no_curve.observe(200, {"accuracy": 0.98})
    assert no_curve.switched_at == 200
    with pytest.raises(ValueError, match=r"^method 'one-shot' needs a teacher trajectory with saved checkpoints$"):
        make_schedule({"name": "one-shot"}, [], None)
    with pytest.raises(ValueError, match=r"^method 'auto' needs the teacher's phases, which were not detected$"):
        make_schedule({"name": "auto"}, SAVED, None)
    with pytest.raises(ValueError, match=r"^progressive with speed 'fit' needs the student's budget$"):
        make_schedule({"name": "progressive", "speed": "fit"}, SAVED, None)
    with pytest.raises(ValueError, match=r"^method\.sped: unknown key"):
        make_schedule({"name": "progressive", "sped": 2}, SAVED, None)


def test_auto_boundaries_are_inclusive_and_its_state_round_trips():
    """Exact-binary accuracies: caught up at exactly checkpoint accuracy - tolerance; half the way at
    exactly the midpoint; the forced switch at exactly `latest`."""
    phases = Phases(drop_start=300, drop_end=700, middle=480, metric="accuracy")
    curve = [{"step": 500, "accuracy": 0.75}]
    caught = make_schedule({"name": "auto", "tolerance": 0.125}, SAVED, phases, curve, budget=4000)
    caught.observe(0, {"accuracy": 0.5})
    caught.observe(100, {"accuracy": 0.625})
    assert caught.switched_at == 100
    plateau = make_schedule({"name": "auto", "tolerance": 0.0, "patience": 1, "min_delta": 0.0}, SAVED, phases,
                            curve, budget=4000)
    plateau.observe(0, {"accuracy": 0.25})
    plateau.observe(100, {"accuracy": 0.5})  # half way from 0.25 to 0.75, an improvement
    state = plateau.state_dict()
    assert state == {"switched_at": None, "initial": 0.25, "best": 0.5, "stale": 0}
    again = make_schedule({"name": "auto", "tolerance": 0.0, "patience": 1, "min_delta": 0.0}, SAVED, phases,
                          curve, budget=4000)
    again.load_state_dict(state)
    for sched in (plateau, again):
        sched.observe(200, {"accuracy": 0.5})  # no gain: a plateau, at exactly half the way
        assert sched.switched_at == 200
    late = make_schedule({"name": "auto"}, SAVED, phases, curve, budget=4000)
    late.observe(2000, {"accuracy": 0.1})
    assert late.switched_at == 2000


def test_adaptive_stops_at_the_final_checkpoint_and_counts_equal_accuracy_as_no_gain():
    last = Adaptive(SAVED, start=800, patience=1, min_delta=0.0)
    for acc in (0.5, 0.5, 0.5, 0.5):
        last.observe(0, {"accuracy": acc})
    assert last.checkpoint(0) == 1000 and last.index == len(SAVED) - 1
