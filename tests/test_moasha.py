"""MO-ASHA's promotion rule on scripted objective vectors, its rungs, and the
constraint check before training, without Ray."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search.core.dominance import crowding, nondominated_ranks
from search.core.spec import Constraint
from search.driver import moasha
from search.driver.moasha import decide
from search.trial import feasibility
from search.trial.runner import milestones


def test_milestones_are_geometric_and_below_the_epochs():
    assert milestones(1, 3, 30) == [1, 3, 9, 27]
    assert milestones(1, 3, 27) == [1, 3, 9]  # a rung at the last epoch would only delay the end
    assert milestones(2, 2, 20) == [2, 4, 8, 16]
    assert milestones(1, 1.5, 6) == [1, 2, 3, 5]  # 1, 1.5->2, 2.25->2 (dropped), 3.375->3, 5.06->5
    assert milestones(5, 3, 5) == []


def test_nondominated_ranks_and_crowding():
    # minimization: (1,3) (2,2) (3,1) are front 0; (3,3) is dominated by (2,2); (4,4) by all.
    points = np.array([[1, 3], [2, 2], [3, 1], [3, 3], [4, 4]], dtype=float)
    assert nondominated_ranks(points).tolist() == [0, 0, 0, 1, 2]
    front = points[:3]
    distance = crowding(front)
    assert math.isinf(distance[0]) and math.isinf(distance[2])
    assert distance[1] == pytest.approx((3 - 1) / 2 + (3 - 1) / 2)
    # Equal points get equal distances; an objective equal everywhere counts for nothing.
    tied = crowding(np.array([[1, 5], [2, 5], [2, 5], [3, 5]], dtype=float))
    assert tied[1] == tied[2] == pytest.approx(1.0)
    assert math.isinf(tied[0]) and math.isinf(tied[3])


def test_the_first_trial_at_a_rung_always_continues():
    decision = decide([-0.5, 2.0], [], reduction_factor=3)
    assert decision.promote and (decision.ahead, decision.keep, decision.of) == (0, 1, 1)


def test_a_dominated_trial_stops_and_a_non_dominated_one_continues():
    # vectors: (-accuracy, latency); three good trials recorded, eta 2 keeps ceil(4/2) = 2.
    others = [[-0.95, 1.0], [-0.90, 0.5], [-0.80, 0.2]]
    dominated = decide([-0.85, 0.9], others, 2)  # worse than (-0.90, 0.5) on both
    assert not dominated.promote and not dominated.failed
    assert (dominated.ahead, dominated.keep, dominated.of) == (3, 2, 4)
    extreme = decide([-0.99, 2.0], others, 2)  # the most accurate: a front extreme, infinite crowding
    assert extreme.promote and extreme.ahead == 0


def test_crowding_breaks_ties_within_the_first_front():
    # One front of four: A and C are its extremes (infinite crowding), B sits close to
    # A, M alone in the gap between B and C. eta 1.5 keeps ceil(4 / 1.5) = 3: the
    # crowded B is the one left out.
    a, b, c, m = [-0.99, 3.0], [-0.98, 2.9], [-0.70, 0.1], [-0.85, 1.5]
    assert nondominated_ranks(np.array([a, b, c, m])).tolist() == [0, 0, 0, 0]
    sparse = decide(m, [a, b, c], 1.5)
    assert sparse.promote and (sparse.ahead, sparse.keep, sparse.of) == (2, 3, 4)
    crowded = decide(b, [a, m, c], 1.5)
    assert not crowded.promote and crowded.ahead == 3
    # A new extreme ties with the other extremes (all infinite): not behind them.
    assert decide([-0.60, 0.05], [a, b, c], 4).ahead == 0


def test_ties_at_the_cut_are_promoted():
    # Equal vectors are never ahead of each other: a trial equal to the best goes on.
    assert decide([-0.9, 1.0], [[-0.9, 1.0]], 2).promote
    assert decide([-0.9, 1.0], [[-0.9, 1.0], [-0.9, 1.0], [-0.9, 1.0]], 4).promote
    # ... and one equal to a trial that is behind the cut stops with it.
    behind = decide([-0.5, 5.0], [[-0.9, 1.0], [-0.5, 5.0], [-0.8, 0.5], [-0.95, 0.8]], 5)
    assert not behind.promote


def test_a_nan_at_a_rung_fails_and_is_not_promoted():
    decision = decide([math.nan, 1.0], [[-0.9, 1.0]], 3)
    assert decision.failed and not decision.promote
    assert decide([-0.9, math.inf], [], 3).failed
    # Others with a NaN are no observation: they neither count nor block.
    assert decide([-0.5, 1.0], [[math.nan, 0.1], [math.nan, 0.2]], 2).of == 1


def test_the_cut_follows_the_reduction_factor():
    # One objective, 8 recorded; a 9th trial: eta 3 keeps the best ceil(9/3) = 3.
    others = [[-v] for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
    third = decide([-0.65], others, 3)  # 0.7 and 0.8 ahead
    assert third.promote and (third.ahead, third.keep, third.of) == (2, 3, 9)
    fourth = decide([-0.55], others, 3)  # 0.6, 0.7, 0.8 ahead
    assert not fourth.promote and fourth.ahead == 3
    assert decide([-0.55], others, 2).promote  # eta 2 keeps 5


def test_rung_vectors_come_from_val_accuracy_and_the_pre_training_measurement():
    objectives = moasha.rung_objectives({"accuracy": "maximize", "latency_ms": "minimize", "f1": "maximize"})
    assert objectives == {"accuracy": "maximize", "latency_ms": "minimize"}  # a task metric is unknown at a rung
    values = moasha.rung_values({"val_accuracy": 0.8, "pretrain_latency_ms": 0.4, "epoch": 3}, objectives)
    assert values == {"accuracy": 0.8, "latency_ms": 0.4}
    assert moasha.minimized(values, objectives) == [-0.8, 0.4]
    assert math.isnan(moasha.rung_values({"val_accuracy": None}, objectives)["accuracy"])


@pytest.mark.parametrize(
    ("constraint", "value", "margin", "infeasible"),
    [
        ("latency_ms <= 0.15", 0.41, 1.0, True),  # 2.7x the bound
        ("latency_ms <= 0.15", 0.29, 1.0, False),  # inside the x2 timing margin
        ("latency_ms <= 0.15", 0.29, 0.5, True),
        ("energy_mj <= 1.0", 2.5, 1.0, True),
        ("size_kb <= 100", 104, 1.0, False),  # counted: 5% margin
        ("size_kb <= 100", 106, 1.0, True),
        ("macs <= 1000", 1021, 1.0, True),  # counted: 2% margin
        ("params >= 1000", 900, 1.0, True),
        ("latency_ms >= 1.0", 0.6, 1.0, False),  # >= on a timed metric: below bound / 2 only
        ("latency_ms >= 1.0", 0.4, 1.0, True),
    ],
)
def test_the_noise_margin_before_training(constraint, value, margin, infeasible):
    parsed = Constraint.parse(constraint)
    reason = feasibility.infeasible_reason([parsed], {parsed.objective: value}, margin)
    assert (reason is not None) == infeasible
    if infeasible:
        assert reason.startswith(f"infeasible before training: {parsed.objective} {value:.3g} ")


def test_reason_reads_like_the_issue():
    reason = feasibility.infeasible_reason([Constraint.parse("latency_ms <= 0.15")], {"latency_ms": 0.41}, 1.0)
    assert reason == "infeasible before training: latency_ms 0.41 > 0.15 (beyond the ×2 timing margin)"


def test_untrained_stand_in_params():
    params = {"quant_mode": "qat", "prune_kind": "gradual", "prune_ratio": 0.5}
    assert feasibility.untrained_params(params) == {"quant_mode": "static", "prune_kind": "unstructured", "prune_ratio": 0.5}
    assert params["quant_mode"] == "qat"  # not changed in place
