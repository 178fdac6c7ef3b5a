"""Pareto front, hypervolume and pick rules on small hand-made studies.

The hand study (accuracy max, latency_ms min, energy_mj min; constraint size_kb <= 100):

    trial  state     accuracy latency energy size_kb  note
    0      COMPLETE  0.90     1.0     5.0    40       front (knee of the whole front; tie with 5)
    1      COMPLETE  0.95     2.0     6.0    60       front (knee: within 5 pp of the best accuracy)
    2      COMPLETE  0.85     0.5     4.0    10       front (fastest, least energy)
    3      COMPLETE  0.88     1.2     5.5    30       dominated by 0
    4      COMPLETE  0.97     3.0     8.0    90       front (most accurate)
    5      COMPLETE  0.90     1.0     5.0    40       same values as 0: front too
    6      FAIL
    7      COMPLETE  0.99     inf     1.0    20       non-finite: never on the front
    8      COMPLETE  0.99     0.4     3.0    150      violates (stored violation): never on the front
    9      COMPLETE  0.99     0.3     2.0    200      violates (spec constraint, no stored attr)
    10     PRUNED
    11     COMPLETE  0.99     0.2    -inf    20       non-finite
"""

from __future__ import annotations

import json
import math
import re

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.core.errors import UsageError
from search.core.spec import from_dict, to_toml_dict
from search.results import pareto as front
from tests.conftest import run_cli, tiny_spec_dict

optuna.logging.set_verbosity(optuna.logging.WARNING)

INF = math.inf
ROWS = [
    (0, "COMPLETE", (0.90, 1.0, 5.0), 40, "mlp"),
    (1, "COMPLETE", (0.95, 2.0, 6.0), 60, "mobilenet"),
    (2, "COMPLETE", (0.85, 0.5, 4.0), 10, "mlp"),
    (3, "COMPLETE", (0.88, 1.2, 5.5), 30, "mlp"),
    (4, "COMPLETE", (0.97, 3.0, 8.0), 90, "mobilenet"),
    (5, "COMPLETE", (0.90, 1.0, 5.0), 40, "mobilenet"),
    (6, "FAIL", None, None, "mlp"),
    (7, "COMPLETE", (0.99, INF, 1.0), 20, "mlp"),
    (8, "COMPLETE", (0.99, 0.4, 3.0), 150, "mlp"),
    (9, "COMPLETE", (0.99, 0.3, 2.0), 200, "mlp"),
    (10, "PRUNED", None, None, "mlp"),
    (11, "COMPLETE", (0.99, 0.2, -INF), 20, "mlp"),
]
EXPECTED_FRONT = [0, 1, 2, 4, 5]


def add(study, state, values=None, user_attrs=None, params=None):
    distributions = {"family": optuna.distributions.CategoricalDistribution(["mlp", "mobilenet"])}
    study.add_trial(
        create_trial(
            state=TrialState[state],
            values=list(values) if values is not None else None,
            params=params or {},
            distributions={k: distributions[k] for k in (params or {})},
            user_attrs=user_attrs or {},
        )
    )


def hand_study(storage: str = "sqlite:///:memory:", name: str = "hand") -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "latency_ms", "energy_mj"])
    study.set_user_attr("spec", to_toml_dict(from_dict(tiny_spec_dict(name=name, constraints=["size_kb <= 100"]))))
    for number, state, values, size, family in ROWS:
        attrs = {"fail_reason": "boom"} if state == "FAIL" else {}
        if values is not None:
            attrs.update(accuracy=values[0], latency_ms=values[1], energy_mj=values[2], size_kb=float(size))
            if number != 9:  # trial 9 has no stored violation: the spec's constraint decides
                attrs["constraints"] = [size - 100.0]
        add(study, state, values, attrs, {"family": family})
    return study


def brute_force_front(study) -> list[int]:
    """Feasible = COMPLETE, finite, size_kb <= 100; front = not dominated by another feasible trial."""
    signs = [-1 if d.name == "MAXIMIZE" else 1 for d in study.directions]
    feasible = [
        t for t in study.trials
        if t.state == TrialState.COMPLETE and all(math.isfinite(v) for v in t.values) and t.user_attrs["size_kb"] <= 100
    ]

    def dominated_by(a, b):
        va = [s * v for s, v in zip(signs, a.values)]
        vb = [s * v for s, v in zip(signs, b.values)]
        return all(y <= x for x, y in zip(va, vb)) and any(y < x for x, y in zip(va, vb))

    return sorted(t.number for t in feasible if not any(dominated_by(t, u) for u in feasible if u is not t))


def test_front_matches_brute_force_and_excludes_fail_nonfinite_infeasible():
    study = hand_study()
    numbers = [t.number for t in front.study_front(study)]
    assert numbers == brute_force_front(study) == EXPECTED_FRONT
    report = front.report(study)
    assert sorted(t.number for t in report.feasible) == [0, 1, 2, 3, 4, 5]
    assert report.excluded() == {"FAIL": 1, "PRUNED": 1, "non-finite value": 2, "violates constraints": 2}


def test_front_matches_brute_force_on_random_studies():
    import random

    rng = random.Random(7)
    for directions in (["maximize", "minimize"], ["minimize", "minimize", "maximize"]):
        study = optuna.create_study(directions=directions)
        for _ in range(40):
            # Coarse values so ties and duplicates happen.
            study.add_trial(create_trial(values=[rng.randint(0, 6) / 2 for _ in directions], user_attrs={"size_kb": 1.0}))
        objectives = front.objectives_of(study)
        got = [t.number for t in front.pareto_front(study.trials, objectives)]
        assert got == brute_force_front(study)
        assert 1 <= len(got) < 40


def two_objective_study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "latency_ms"])
    for values in ((0.9, 1.0), (0.8, 0.5), (0.7, 1.0), (0.6, 0.2)):
        study.add_trial(create_trial(values=list(values)))
    return study


def test_reference_point_and_hypervolume_by_hand():
    study = two_objective_study()
    report = front.report(study)
    assert [t.number for t in report.front] == [0, 1, 3]
    # Worst feasible value widened by 10% of the range: accuracy 0.6 - 0.03, latency 1.0 + 0.08.
    assert report.reference == pytest.approx([0.57, 1.08])
    # Staircase: 0.1 * 0.08 + 0.2 * 0.58 + 0.03 * 0.88
    assert report.hypervolume == pytest.approx(0.1504)
    given = front.report(study, {"accuracy": 0.5, "latency_ms": 2.0})
    assert given.reference == [0.5, 2.0]
    assert given.hypervolume == pytest.approx(0.1 * 1.0 + 0.2 * 1.5 + 0.1 * 1.8)
    # Part given: the rest follows the default rule.
    partial = front.report(study, {"latency_ms": 2.0})
    assert partial.reference == pytest.approx([0.57, 2.0])
    # Points not better than the reference add nothing.
    assert front.report(study, {"accuracy": 0.85, "latency_ms": 2.0}).hypervolume == pytest.approx(0.05 * 1.0)


def test_hypervolume_three_objectives_and_history():
    study = hand_study()
    report = front.report(study, {"accuracy": 0.8, "latency_ms": 4.0, "energy_mj": 10.0})
    # Trial 4 alone: 0.17 x 1 x 2; the union of all front boxes is larger but below the sum.
    boxes = [(0.10, 3.0, 5.0), (0.15, 2.0, 4.0), (0.05, 3.5, 6.0), (0.17, 1.0, 2.0)]
    assert max(a * b * c for a, b, c in boxes) < report.hypervolume < sum(a * b * c for a, b, c in boxes)
    history = report.history()
    assert [n for n, _ in history] == list(range(12))
    volumes = [v for _, v in history]
    assert volumes[0] == pytest.approx(0.10 * 3.0 * 5.0)
    assert all(b >= a - 1e-12 for a, b in zip(volumes, volumes[1:]))
    assert volumes[-1] == pytest.approx(report.hypervolume)
    assert volumes[3] == pytest.approx(volumes[2])  # trial 3 is dominated: adds nothing


@pytest.mark.parametrize(
    "rule,where,expected",
    [
        # Useful accuracy (within 0.05 of 0.97): {1, 4}; over them 1 is (1, 0, 0), 4 is (0, 1, 1).
        ("knee", [], 1),
        (None, [], 1),
        ("max:accuracy", [], 4),
        ("min:latency_ms", [], 2),
        ("min:energy_mj", [], 2),
        ("weights:accuracy=1", [], 4),
        ("weights:accuracy=2,latency_ms=1", [], 1),  # 2*0.833+0.4 = 2.07 beats 2*1+0 = 2.0
        ("weights:accuracy=1,latency_ms=1,energy_mj=1", [], 2),
        ("max:accuracy", ["latency_ms<=1.5"], 0),
        ("min:latency_ms", ["accuracy>=0.93"], 1),
        ("knee", ["family==mobilenet"], 1),  # front {1, 4, 5}: distances 0.665, 1.414, 1.0
        ("max:accuracy", ["size_kb<50"], 0),  # user attr filter
        ("min:size_kb", [], 2),  # a numeric user attr as the pick key
    ],
)
def test_pick_rules(rule, where, expected):
    assert front.pick(hand_study(), rule, where).number == expected


def test_knee_of_the_whole_front_with_the_accuracy_rule_off():
    # distances to the ideal over the whole front: 0.665 (0, 5), 0.799 (1), 1.0 (2), 1.414 (4); tie → lower number
    assert front.pick(hand_study(), "knee", accuracy_within=1.0).number == 0
    # Within 0.07: {0, 1, 4, 5}, normalized over them: 0 is (1, 0, 0), 1 is (0.29, 0.5, 0.33): 1.
    assert front.pick(hand_study(), "knee", accuracy_within=0.07).number == 1
    assert front.report(hand_study(), accuracy_within=1.0).knee.number == 0


def near_chance_study() -> optuna.Study:
    """A front where a near-chance model is nearest the ideal point: it is the fastest
    and lightest by far, and accuracy is only one of three normalized axes."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "latency_ms", "energy_mj"])
    for values, size in (((0.98, 1.00, 1.00), 120.0), ((0.12, 0.05, 0.05), 4.0), ((0.90, 0.50, 0.95), 60.0),
                         ((0.972, 0.76, 0.76), 10.0)):
        add(study, "COMPLETE", values, {"size_kb": size})
    return study


def test_knee_never_picks_a_near_chance_model():
    study = near_chance_study()
    assert len(front.study_front(study)) == 4
    # Without the rule: distances 1.41 (0), 1.00 (1), 1.06 (2), 1.06 (3): the 12% model.
    assert front.pick(study, "knee", accuracy_within=1.0).number == 1
    report = front.report(study)
    assert report.knee.number == front.pick(study, "knee").number == 3
    assert {t.number for t in report.useful()} == {0, 3}  # within 5 pp of 0.98
    assert front.pick(study, "knee", accuracy_within=0.1).number == 3  # 0.90 joins: 1.41, 1.28, 0.53
    with pytest.raises(UsageError, match="--accuracy-within 2: must be between 0 and 1"):
        front.pick(study, "knee", accuracy_within=2)


def test_trade_sentence_matches_the_numbers():
    from search.results.trade import ratio_words, trade_sentence

    study = near_chance_study()
    objectives = front.objectives_of(study)
    best, knee = study.trials[0], study.trials[3]
    # 0.972 - 0.98 = -0.8 pp; 1.00 / 0.76 = 1.32 -> 1.3× faster; 120 / 10 = 12× smaller.
    assert trade_sentence(knee, best, objectives) == (
        "\u22120.8 pp accuracy, 1.3× faster, 12× smaller than the most accurate front trial (trial 0)")
    assert trade_sentence(best, best, objectives) == "the most accurate front trial itself"
    # The other way round: slower and larger, accuracy gained.
    assert trade_sentence(best, knee, objectives).startswith("+0.8 pp accuracy, 1.3× slower, 12× larger")
    assert ratio_words(9.96, "faster", "slower") == "10× faster" and ratio_words(1.0, "faster", "slower") == "1.0× faster"
    report = front.report(study)
    assert front.trade_words(report.front, report.knee, objectives) == trade_sentence(knee, best, objectives)
    assert report.to_json("s")["knee_trade"] == trade_sentence(knee, best, objectives)


@pytest.mark.parametrize(
    "rule,where,message",
    [
        ("knee", ["accuracy>=0.98"], "no feasible trial satisfies accuracy>=0.98"),  # only infeasible trials reach it
        ("max:flops", [], "unknown objective 'flops'"),
        ("weights:accuracy=1,flops=2", [], "unknown objective 'flops'"),
        ("best", [], "use knee, max:OBJECTIVE"),
        ("knee", ["flops<=3"], "no trial has 'flops'"),
        ("knee", ["latency_ms<=fast"], "needs a number"),
    ],
)
def test_pick_errors_are_usage_errors(rule, where, message):
    with pytest.raises(UsageError, match=message):
        front.pick(hand_study(), rule, where)


def test_cli_front_json_and_png(tmp_path):
    url = f"sqlite:///{tmp_path / 'hand.db'}"
    study = hand_study(url)
    png = tmp_path / "front.png"
    result = run_cli("front", "hand", "--storage", url, "--json", "--plot", str(png), timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == ["study", "objectives", "directions", "hypervolume", "reference_point", "knee", "accuracy_within",
                          "max_drop", "knee_rule", "knee_fallback", "knee_trade", "baseline", "trials"]
    assert data["baseline"] is None and data["knee_fallback"] is None  # a hand-made study has no baseline
    report = front.report(study)
    assert data["study"] == "hand"
    assert data["objectives"] == ["accuracy", "latency_ms", "energy_mj"]
    assert data["directions"] == ["maximize", "minimize", "minimize"]
    assert data["hypervolume"] == pytest.approx(report.hypervolume) and data["hypervolume"] > 0
    assert data["reference_point"] == pytest.approx(dict(zip(data["objectives"], report.reference)))
    assert data["knee"] == front.pick(study, "knee").number == 1 and data["accuracy_within"] == 0.05
    assert data["knee_trade"] == "\u22122.0 pp accuracy, 1.5× faster, 1.5× smaller than the most accurate front trial (trial 4)"
    records = data["trials"]
    assert sorted(r["number"] for r in records) == brute_force_front(study)
    assert [r["number"] for r in records][0] == 4  # sorted by the first objective, best first
    assert records[0]["values"] == {"accuracy": 0.97, "latency_ms": 3.0, "energy_mj": 8.0}
    assert records[0]["user_attrs"]["size_kb"] == 90.0 and records[0]["params"] == {"family": "mobilenet"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

    table = run_cli("front", "hand", "--storage", url, "--reference", "accuracy=0.8,latency_ms=4,energy_mj=10", timeout=120)
    assert table.returncode == 0, table.stderr
    expected_hv = front.report(study, {"accuracy": 0.8, "latency_ms": 4.0, "energy_mj": 10.0}).hypervolume
    assert f"hypervolume {expected_hv:.6g}" in table.stdout
    assert "5 on the Pareto front of 6 feasible trials (12 in all" in table.stdout
    # Not a terminal: every column at its natural width, the knee starred, the export hint for it.
    assert "trial  accuracy  latency_ms  energy_mj  size_kb  model" in table.stdout
    assert re.search(r"^1\*\s+0\.95\s+2\s+6\s+60\s+mobilenet", table.stdout, re.M), table.stdout
    assert ("* knee (trial 1): nearest the ideal point among the 2 front trials within 5 pp of the best accuracy "
            "(3 left out); what `paretune export` picks by default; \u22122.0 pp accuracy, 1.5× faster, 1.5× smaller "
            "than the most accurate front trial (trial 4)") in table.stdout
    whole = run_cli("front", "hand", "--storage", url, "--accuracy-within", "1", timeout=120)
    assert re.search(r"^0\*\s+0\.9\s+1\s+5\s+40\s+mlp", whole.stdout, re.M), whole.stdout
    assert f"next: paretune export hand --storage {url} --out hand-best.toml" in table.stdout


def test_front_table_fits_a_narrow_terminal_without_cutting_words():
    import io

    from rich.console import Console

    from search.results.front_table import print_front

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "latency_ms", "energy_mj"])
    choices = {"family": ["mlp", "mobilenet"], "prune_kind": ["none", "structured"], "quant_mode": ["none", "dynamic"]}
    distributions = {k: optuna.distributions.CategoricalDistribution(v) for k, v in choices.items()}
    for values, params in (((0.97, 3.0, 8.0), ("mobilenet", "structured", "dynamic")), ((0.90, 1.0, 5.0), ("mlp", "none", "none"))):
        study.add_trial(create_trial(values=list(values), params=dict(zip(choices, params)), distributions=distributions,
                                     user_attrs={"size_kb": 12.5}))
    report = front.report(study)
    model = "family/prune_kind/quant_mode"
    for width, dropped in ((120, None), (80, f"{model} shown as config"), (70, f"size_kb left out, {model} shown as config"),
                           (45, f"size_kb and {model} left out")):
        console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None, record=True)
        print_front(console, report)
        text = console.export_text()
        table_lines = text.split("* knee")[0].splitlines()
        assert all(len(line) <= width for line in table_lines), text
        assert "…" not in text
        assert re.search(rf"^{report.knee.number}\*\s", text, re.M), text  # the knee row, starred
        assert all(len(line) <= width for line in text.splitlines()), text  # the notes wrap between words
        if dropped:
            assert f"({dropped} to fit {width} columns" in " ".join(text.split()), text
        else:
            assert "to fit" not in text and "quant_mode" in table_lines[0]
        if width == 80:
            assert "mobilenet/structured/dynamic" in text


def test_plots_mark_the_knee_in_a_visible_colour(tmp_path):
    import matplotlib.image
    import numpy as np
    from matplotlib.colors import to_rgba

    from search.results.plots import FRONT_COLOR, KNEE_COLOR, plot, plotly_figure

    report = front.report(hand_study())
    fig = plotly_figure(report)
    knees = [t for t in fig.data if t.name == "knee (trial 1)"]
    assert knees, [t.name for t in fig.data]
    for trace in knees:
        rgba = to_rgba(trace.marker.color)
        assert rgba[3] == 1.0 and rgba[:3] != to_rgba(FRONT_COLOR)[:3]  # opaque, unlike the front's red
        assert not str(trace.marker.symbol).endswith("-open")  # an open symbol would take no fill
    html = plot(report, tmp_path / "front.html").read_text()
    assert '"name":"knee (trial 1)"' in html and KNEE_COLOR in html
    # Axis titles short enough for a 440-pixel panel (the hypervolume's used to carry the
    # reference point and was clipped); the reference point is in the panel title now.
    titles = [fig.layout[k].title.text for k in fig.layout if k.startswith(("xaxis", "yaxis"))]
    assert "hypervolume" in titles and max(len(t) for t in titles) <= 28, titles
    assert any("reference point accuracy=" in a.text for a in fig.layout.annotations)

    png = matplotlib.image.imread(plot(report, tmp_path / "front.png"))
    knee_rgb = np.array(to_rgba(KNEE_COLOR)[:3])
    knee_pixels = np.sum(np.all(np.abs(png[..., :3] - knee_rgb) < 0.04, axis=-1))
    assert knee_pixels > 400  # three 2-D stars, a 3-D one and the legend's, each some hundred pixels


def test_status_names_the_best_trial_that_is_not_dominated_among_ties(tmp_path):
    url = f"sqlite:///{tmp_path / 'ties.db'}"
    study = optuna.create_study(study_name="ties", storage=url, directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "latency_ms", "energy_mj"])
    for values in ((0.90, 1.0, 5.0), (0.95, 2.0, 6.0), (0.95, 2.0, 5.5), (0.95, 1.5, 5.0), (0.80, 0.5, 4.0)):
        add(study, "COMPLETE", values)
    # Trials 1, 2 and 3 tie on the best accuracy; 3 dominates the other two.
    objectives = front.objectives_of(study)
    best = front.best_per_objective(study.trials, objectives)
    assert [t.number for t in best] == [3, 4, 4]
    result = run_cli("status", "ties", "--storage", url, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line.split()[-2] for line in result.stdout.splitlines() if line.count("│") == 5}
    assert rows == {"accuracy": "3", "latency_ms": "4", "energy_mj": "4"}, result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["export", "hand", "--out", "{tmp}/x.toml", "--where", "accuracy>=0.98"], "no feasible trial satisfies"),
        (["export", "hand", "--out", "{tmp}/x.toml", "--pick", "max:flops"], "unknown objective 'flops'"),
        (["front", "nope"], "study 'nope' not found"),
    ],
    ids=["impossible filter", "unknown objective", "unknown study"],
)
def test_cli_usage_errors_are_one_line(tmp_path, args, message):
    url = f"sqlite:///{tmp_path / 'hand.db'}"
    hand_study(url)
    result = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], "--storage", url, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "x.toml").exists()


def test_html_plot_is_written(tmp_path):
    from search.results.plots import plot

    path = plot(front.report(hand_study()), tmp_path / "front.html")
    text = path.read_text()
    assert "Pareto front" in text and "knee (trial 1)" in text and "plotly" in text.lower()
    assert "hypervolume over trials" in text


def test_plot_rejects_unknown_suffix(tmp_path):
    from search.results.plots import plot

    with pytest.raises(UsageError, match="use a .html"):
        plot(front.report(hand_study()), tmp_path / "front.jpg")


def test_filters_read_a_dimension_under_its_conditional_name():
    # Transformers draw `quant_mode_transformer`, QAT trials `runtime_qat`: one dimension each.
    made = [
        create_trial(state=TrialState.COMPLETE, values=[0.9, 1.0, 1.0], params={"quant_mode": "dynamic", "runtime": "eager"},
                     distributions={"quant_mode": optuna.distributions.CategoricalDistribution(["none", "dynamic", "qat"]),
                                    "runtime": optuna.distributions.CategoricalDistribution(["eager", "torchscript"])}),
        create_trial(state=TrialState.COMPLETE, values=[0.8, 0.5, 1.0], params={"quant_mode_transformer": "dynamic"},
                     distributions={"quant_mode_transformer": optuna.distributions.CategoricalDistribution(["none", "dynamic"])}),
        create_trial(state=TrialState.COMPLETE, values=[0.7, 0.4, 0.5], params={"quant_mode": "qat", "runtime_qat": "torchscript"},
                     distributions={"quant_mode": optuna.distributions.CategoricalDistribution(["none", "dynamic", "qat"]),
                                    "runtime_qat": optuna.distributions.CategoricalDistribution(["eager", "torchscript"])}),
    ]
    names = front.Objectives(["accuracy", "latency_ms", "energy_mj"], ["maximize", "minimize", "minimize"])
    dynamic = front.apply_filters(made, [front.Filter.parse("quant_mode==dynamic")], names)
    assert [t.params for t in dynamic] == [made[0].params, made[1].params]
    scripted = front.apply_filters(made, [front.Filter.parse("runtime==torchscript")], names)
    assert scripted == [made[2]]
