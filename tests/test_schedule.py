import pytest

from progdistill.schedule import Adaptive, Auto, make_schedule, progressive_checkpoint, resolve_checkpoint
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
    with pytest.raises(ValueError):
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
