"""The Pareto front of a study, its hypervolume, and picking one trial from it.

- Only *feasible* trials count: COMPLETE, every objective value finite, and every
  constraint violation <= 0 (the "constraints" user attr, or the spec's constraints
  evaluated on the trial's metrics when the attr is missing). Failed, pruned,
  running, non-finite and constraint-violating trials are never on the front.
- The front is the set of feasible trials no other feasible trial dominates, using
  the study's directions. Two trials with equal values are both on it.
- Hypervolume (moocore, on minimization: maximized objectives are negated) is taken
  against a reference point: for each objective the worst value among feasible
  trials, widened by 10% of the objective's range (10% of |worst| when the range is
  zero, 0.1 when that is zero too), or the user's value where one is given.
- The knee: among the front trials of *useful* accuracy (within `accuracy_within`,
  default 0.05 = 5 pp, of the most accurate front trial), the one nearest the ideal
  point, each objective normalized to [0, 1] over those trials (ties: the lower trial
  number); `export`'s default pick. Without the accuracy rule a near-chance model that
  is merely fastest can be nearest the ideal point (every other objective at its best,
  accuracy at its worst); `accuracy_within=1` turns the rule off.
- Pick rules: `knee` (default), `max:NAME`, `min:NAME`, `weights:a=1,b=0.5`; filters
  `NAME<=x`, `NAME>=x`, `NAME<x`, `NAME>x`, `NAME==x`, `NAME!=x` on objectives, user
  attrs or params. Filters select among feasible trials first; the rule then picks
  from the front of what is left.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

import spaces
from search.core import conditions, dominance
from search.core.conditions import Bound
from search.core.dominance import dominates, nondominated_mask  # noqa: F401 - the front's maths, named here too
from search.core.errors import UsageError
from search.core.records import CONSTRAINTS_ATTR, SPEC_ATTR, TASK_KIND_ATTR
from search.results.recorded import MAXIMIZE, MINIMIZE, Objectives, lookup, objectives_of, param_value, recorded_spec  # noqa: F401 - the front's vocabulary
from search.results.trade import trade_sentence
from search.tasks import baseline as baselines
from search.tasks.plugins import suggest_context

WIDEN = 0.1
# The knee considers front trials within this of the most accurate front trial's
# accuracy (a fraction: 0.05 is 5 percentage points); `--accuracy-within` sets it.
ACCURACY_WITHIN = 0.05


def _spec_constraints(study: optuna.Study) -> list[Bound]:
    """The constraints of the study's recorded spec (ones that no longer parse are left out)."""
    texts = (study.user_attrs.get(SPEC_ATTR) or {}).get("constraints") or []
    constraints = []
    for text in texts:
        try:
            constraints.append(Bound.of(text))
        except ValueError:
            continue
    return constraints


def violations(trial: FrozenTrial, constraints: list = (), names: list[str] = ()) -> list[float]:
    """Constraint violations of a trial (<= 0 feasible); [] when it has none."""
    stored = trial.user_attrs.get(CONSTRAINTS_ATTR)
    if stored is not None:
        return [float(v) for v in stored]
    metrics = dict(trial.user_attrs)
    if trial.values is not None:
        metrics.update(zip(names, trial.values))
    out = []
    for constraint in constraints:
        try:
            out.append(constraint.violation(metrics))
        except (KeyError, TypeError, ValueError):
            out.append(math.inf)  # a constrained metric that was never measured is not feasible
    return out


def why_infeasible(trial: FrozenTrial, constraints: list = (), names: list[str] = ()) -> str | None:
    """None for a feasible trial, else a short reason."""
    if trial.state != TrialState.COMPLETE:
        return trial.state.name
    if trial.values is None or not all(math.isfinite(v) for v in trial.values):
        return "non-finite value"
    if any(not (v <= 0) for v in violations(trial, constraints, names)):
        return "violates constraints"
    return None


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    constraints = _spec_constraints(study)
    names = objectives_of(study).names
    return [t for t in study.get_trials(deepcopy=False) if why_infeasible(t, constraints, names) is None]


def minimization_values(trials: list[FrozenTrial], objectives: Objectives) -> np.ndarray:
    if not trials:
        return np.empty((0, len(objectives.names)))
    return np.array([t.values for t in trials], dtype=float) * objectives.signs


def pareto_front(trials: list[FrozenTrial], objectives: Objectives) -> list[FrozenTrial]:
    """The non-dominated trials among `trials` (assumed feasible), by trial number."""
    points = minimization_values(trials, objectives)
    mask = nondominated_mask(points)
    return sorted((t for t, keep in zip(trials, mask) if keep), key=lambda t: t.number)


def study_front(study: optuna.Study) -> list[FrozenTrial]:
    return pareto_front(feasible_trials(study), objectives_of(study))


# --- reference point and hypervolume -------------------------------------------------


def parse_assignments(text: str, context: str) -> dict[str, float]:
    """'accuracy=0, latency_ms=5' → {"accuracy": 0.0, "latency_ms": 5.0}."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise UsageError(f"{context}: expected NAME=NUMBER pairs like 'accuracy=0,latency_ms=5', but got {part!r}")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"{context}: {name}={value!r} is not a number") from None
        if not math.isfinite(number):
            raise UsageError(f"{context}: {name}={value} must be finite")
        out[name] = number
    if not out:
        raise UsageError(f"{context}: expected NAME=NUMBER pairs like 'accuracy=0,latency_ms=5'")
    return out


def reference_point(
    trials: list[FrozenTrial], objectives: Objectives, given: dict[str, float] | None = None
) -> list[float]:
    """Per objective: the user's value, else the worst feasible value widened by 10% of the range."""
    given = dict(given or {})
    for name in given:
        objectives.index(name, "--reference")
    values = np.array([t.values for t in trials], dtype=float) if trials else None
    ref = []
    for i, (name, direction) in enumerate(zip(objectives.names, objectives.directions)):
        if name in given:
            ref.append(float(given[name]))
            continue
        if values is None:
            raise UsageError(f"--reference: no feasible trials to derive {name} from; give it as {name}=NUMBER")
        column = values[:, i]
        low, high = float(column.min()), float(column.max())
        span = high - low
        margin = WIDEN * span if span > 0 else (WIDEN * abs(high if direction == MINIMIZE else low) or WIDEN)
        ref.append(high + margin if direction == MINIMIZE else low - margin)
    return ref


def hypervolume(trials: list[FrozenTrial], objectives: Objectives, reference: list[float]) -> float:
    signs = objectives.signs
    return dominance.hypervolume(minimization_values(trials, objectives), np.asarray(reference, dtype=float) * signs)


def hypervolume_history(
    study_trials: list[FrozenTrial], feasible: list[FrozenTrial], objectives: Objectives, reference: list[float]
) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the feasible trials numbered <= it) for every trial."""
    feasible_numbers = {t.number for t in feasible}
    by_number = sorted(study_trials, key=lambda t: t.number)
    ref = np.asarray(reference, dtype=float) * objectives.signs
    seen: list[FrozenTrial] = []
    history, current = [], 0.0
    for trial in by_number:
        if trial.number in feasible_numbers:
            seen.append(trial)
            seen = pareto_front(seen, objectives)  # dominated points add no volume
            current = dominance.hypervolume(minimization_values(seen, objectives), ref)
        history.append((trial.number, current))
    return history


@dataclass
class FrontReport:
    objectives: Objectives
    trials: list[FrozenTrial]  # every trial of the study
    feasible: list[FrozenTrial]
    front: list[FrozenTrial]
    reference: list[float]
    hypervolume: float
    constraints: list
    # params -> {column: words} per dimension ("model": "cnn", "pruning": "structured 0.42"),
    # from the study's recorded spec; None for a lookup-table study (its params are the words)
    describe: Callable[[dict], dict[str, str]] | None = None
    accuracy_within: float = ACCURACY_WITHIN  # the knee's useful-accuracy rule without a baseline
    baseline: FrozenTrial | None = None  # the study's measured baseline (search.tasks.baseline)
    max_drop: float = baselines.MAX_DROP  # the knee's accuracy rule against the baseline

    def excluded(self) -> dict[str, int]:
        """Why trials are not feasible, counted ({"FAIL": 2, "violates constraints": 1})."""
        from collections import Counter

        counts: Counter = Counter()
        for trial in self.trials:
            reason = why_infeasible(trial, self.constraints, self.objectives.names)
            if reason is not None:
                counts[reason] += 1
        return dict(counts)

    def history(self) -> list[tuple[int, float]]:
        return hypervolume_history(self.trials, self.feasible, self.objectives, self.reference) if self.reference else []

    @property
    def knee(self) -> FrozenTrial | None:
        return self.knee_choice().trial

    def knee_choice(self) -> "KneeChoice":
        return choose_knee(self.front, self.objectives, self.accuracy_within, self.baseline, self.max_drop)

    def useful(self) -> list[FrozenTrial]:
        """The front trials the knee is taken among (see `choose_knee`)."""
        return self.knee_choice().among

    def rows(self) -> list[FrozenTrial]:
        """The front best first by the first objective (then by trial number): the order
        of the `front` table and of `front --json`."""
        sign = self.objectives.signs[0]
        return sorted(self.front, key=lambda t: (sign * t.values[0], t.number))

    def to_json(self, study_name: str) -> dict:
        """`paretune front --json`: the front with its hypervolume, reference point and knee."""
        choice = self.knee_choice()
        knee_trial = choice.trial
        return {
            "study": study_name,
            "objectives": list(self.objectives.names),
            "directions": list(self.objectives.directions),
            "hypervolume": self.hypervolume,
            "reference_point": dict(zip(self.objectives.names, self.reference)),
            "knee": knee_trial.number if knee_trial is not None else None,
            "accuracy_within": self.accuracy_within,
            "max_drop": self.max_drop,
            "knee_rule": choice.rule,
            "knee_fallback": choice.fallback,
            "knee_trade": trade_words(self.front, knee_trial, self.objectives, self.baseline) if knee_trial is not None else None,
            "baseline": trial_record(self.baseline, self.objectives) if self.baseline is not None else None,
            "trials": [trial_record(t, self.objectives) for t in self.rows()],
        }


def report(
    study: optuna.Study, reference: dict[str, float] | None = None, accuracy_within: float = ACCURACY_WITHIN,
    max_drop: float = baselines.MAX_DROP,
) -> FrontReport:
    objectives = objectives_of(study)
    trials = study.get_trials(deepcopy=False)
    constraints = _spec_constraints(study)
    feasible = [t for t in trials if why_infeasible(t, constraints, objectives.names) is None]
    front = pareto_front(feasible, objectives)
    for name in reference or {}:
        objectives.index(name, "--reference")
    ref = reference_point(feasible, objectives, reference) if feasible else []
    hv = hypervolume(front, objectives, ref) if ref else 0.0
    check_within(accuracy_within)
    baselines.check_max_drop(max_drop)
    return FrontReport(objectives, trials, feasible, front, ref, hv, constraints, describer(study), accuracy_within,
                       baselines.find(trials), max_drop)


def describer(study: optuna.Study) -> Callable[[dict], dict[str, str]] | None:
    """Per-dimension words for a trial's params, from the study's recorded spec and the
    dimension registry (the user's own dimensions, not loaded here, say nothing)."""
    kind = study.user_attrs.get(TASK_KIND_ATTR) or "image"
    if kind == "table" or SPEC_ATTR not in study.user_attrs:
        return None
    try:
        spec = recorded_spec(study)
    except UsageError:
        return None
    active = spaces.active(spaces.builtins(), suggest_context(spec, kind))

    def words(params: dict) -> dict[str, str]:
        out = {}
        for dimension in active:
            column = "model" if dimension.stage == "build" else dimension.name
            out[column] = dimension.describe(params, spaces.section(spec, dimension))
        return out

    return words


# --- filters and pick rules ----------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    name: str
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> "Filter":
        parts = conditions.split(text, conditions.COMPARISONS)
        if parts is None:
            raise UsageError(f"--where {text!r}: expected NAME OP VALUE like 'latency_ms<=1.5' (OP: <= >= < > == !=)")
        name, op, raw = parts
        op = "==" if op == "=" else op
        value: Any = raw.strip("'\"")
        try:
            value = float(value)
        except ValueError:
            if op not in ("==", "!="):
                raise UsageError(f"--where {text!r}: {op} needs a number, but got {raw!r}") from None
            value = {"true": True, "false": False}.get(value.lower(), value)
        return cls(name, op, value)

    def holds(self, actual: Any) -> bool:
        if actual is None:
            return False
        if isinstance(self.value, bool) or isinstance(actual, bool):
            equal = actual == self.value
        elif isinstance(self.value, float):
            try:
                actual = float(actual)
            except (TypeError, ValueError):
                return False
            if math.isnan(actual):
                return False
            equal = math.isclose(actual, self.value, rel_tol=1e-9, abs_tol=1e-12)
            if self.op in ("<=", ">=", "<", ">"):
                return {"<=": actual <= self.value, ">=": actual >= self.value,
                        "<": actual < self.value, ">": actual > self.value}[self.op]
        else:
            equal = str(actual) == self.value
        return equal if self.op == "==" else not equal

    def __str__(self) -> str:
        value = f"{self.value:g}" if isinstance(self.value, float) else str(self.value)
        return f"{self.name}{self.op}{value}"


def apply_filters(trials: list[FrozenTrial], filters: list[Filter], objectives: Objectives) -> list[FrozenTrial]:
    for f in filters:
        if not any(lookup(t, f.name, objectives) is not None for t in trials):
            raise UsageError(
                f"--where {f}: no trial has {f.name!r} (objectives: {', '.join(objectives.names)}; "
                "or a user attr such as size_kb, macs, energy_source; or a param such as family)"
            )
        trials = [t for t in trials if f.holds(lookup(t, f.name, objectives))]
    return trials


@dataclass(frozen=True)
class Pick:
    kind: str  # "knee", "max", "min", "weights"
    name: str | None = None
    weights: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> "Pick":
        text = (text or "knee").strip()
        if text == "knee":
            return cls("knee")
        kind, sep, rest = text.partition(":")
        rest = rest.strip()
        if sep and kind in ("max", "min") and rest:
            return cls(kind, name=rest)
        if sep and kind == "weights" and rest:
            return cls("weights", weights=tuple(parse_assignments(rest, f"--pick {text}").items()))
        raise UsageError(f"--pick {text!r}: use knee, max:OBJECTIVE, min:OBJECTIVE or weights:accuracy=1,latency_ms=0.5")

    def __str__(self) -> str:
        if self.kind == "weights":
            return "weights:" + ",".join(f"{k}={v:g}" for k, v in self.weights)
        return f"{self.kind}:{self.name}" if self.name else self.kind


def normalized(points: np.ndarray) -> np.ndarray:
    """Minimization points scaled per column to [0, 1] (0 = best on the set); a constant column is 0."""
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return (points - low) / span


def knee_distances(front: list[FrozenTrial], objectives: Objectives) -> np.ndarray:
    """Euclidean distance of each front trial to the ideal point, objectives normalized over the front."""
    return np.linalg.norm(normalized(minimization_values(front, objectives)), axis=1)


def _argbest(scores: np.ndarray, front: list[FrozenTrial], tiebreak: np.ndarray) -> FrozenTrial:
    """Smallest score; ties go to the smaller knee distance, then the lower trial number."""
    order = sorted(range(len(front)), key=lambda i: (round(float(scores[i]), 12), float(tiebreak[i]), front[i].number))
    return front[order[0]]


def accuracy_of(trial: FrozenTrial, objectives: Objectives) -> float | None:
    """The trial's accuracy: its objective value, else its measured user attr."""
    value = _number(lookup(trial, "accuracy", objectives))
    return None if math.isnan(value) else value


def check_within(accuracy_within: float) -> float:
    if not (isinstance(accuracy_within, (int, float)) and 0 <= accuracy_within <= 1):
        raise UsageError(f"--accuracy-within {accuracy_within!r}: must be between 0 and 1 (0.05 = 5 percentage points)")
    return float(accuracy_within)


def useful(front: list[FrozenTrial], objectives: Objectives, accuracy_within: float = ACCURACY_WITHIN) -> list[FrozenTrial]:
    """The front trials whose accuracy is within `accuracy_within` of the most accurate
    front trial's; the whole front where its trials carry no accuracy."""
    scored = [(t, accuracy_of(t, objectives)) for t in front]
    known = [a for _, a in scored if a is not None]
    if not known:
        return list(front)
    best = max(known)
    return [t for t, a in scored if a is not None and a >= best - accuracy_within - 1e-12]


def knee(front: list[FrozenTrial], objectives: Objectives, accuracy_within: float = ACCURACY_WITHIN) -> FrozenTrial | None:
    """Among the `useful` front trials, the one nearest the ideal point (objectives
    normalized over those trials, see `knee_distances`); None for an empty front."""
    candidates = useful(front, objectives, accuracy_within)
    return pick_from(candidates, Pick("knee"), objectives) if candidates else None


@dataclass(frozen=True)
class KneeChoice:
    trial: FrozenTrial | None  # the knee; None for an empty front
    among: list[FrozenTrial]  # the front trials it was taken among
    rule: str  # which ones those are, in words
    fallback: str | None = None  # why the baseline's rule could not be used, if it could not


def choose_knee(
    front: list[FrozenTrial], objectives: Objectives, accuracy_within: float = ACCURACY_WITHIN,
    baseline: FrozenTrial | None = None, max_drop: float = baselines.MAX_DROP,
) -> KneeChoice:
    """The knee among the front trials whose accuracy is within `max_drop` of the
    baseline's (INC's and NNCF's accuracy criterion); where none is, or there is no
    measured baseline, among those within `accuracy_within` of the most accurate front
    trial (`useful`), and `fallback` says why."""
    fallback = None
    base = accuracy_of(baseline, objectives) if baseline is not None else None
    if base is not None:
        within = [t for t in front if (a := accuracy_of(t, objectives)) is not None and a >= base - max_drop - 1e-12]
        if within:
            rule = f"within {100 * max_drop:g} pp of the baseline's accuracy (trial {baseline.number})"
            return KneeChoice(pick_from(within, Pick("knee"), objectives), within, rule)
        fallback = f"no front trial is within {100 * max_drop:g} pp of the baseline's accuracy ({base:.4g}, trial {baseline.number})"
    candidates = useful(front, objectives, accuracy_within)
    rule = f"within {100 * accuracy_within:g} pp of the best accuracy"
    return KneeChoice(pick_from(candidates, Pick("knee"), objectives) if candidates else None, candidates, rule, fallback)


def most_accurate(front: list[FrozenTrial], objectives: Objectives) -> FrozenTrial | None:
    """The front trial of the highest accuracy (ties: the one nearer the knee, then the lower number)."""
    scored = [t for t in front if accuracy_of(t, objectives) is not None]
    if not scored:
        return None
    return pick_from(scored, Pick("max", "accuracy"), objectives)


def trade_words(
    front: list[FrozenTrial], chosen: FrozenTrial, objectives: Objectives, baseline: FrozenTrial | None = None
) -> str | None:
    """What `chosen` trades against the baseline (where measured), else against the
    most accurate front trial, in words (see `search.results.trade`); None when the trials
    carry no accuracy."""
    if baseline is not None:
        return trade_sentence(chosen, baseline, objectives, against="the baseline")
    reference = most_accurate(front, objectives)
    if reference is None:
        return None
    return trade_sentence(chosen, reference, objectives)


def best_per_objective(trials: list[FrozenTrial], objectives: Objectives) -> list[FrozenTrial | None]:
    """For each objective, the trial with its best value. Among trials tied on that
    value, one that no other tied trial dominates, then the lowest number: a trial
    that ties the best accuracy and is faster is the better "best accuracy"."""
    points = minimization_values(trials, objectives)
    best: list[FrozenTrial | None] = []
    for i in range(len(objectives.names)):
        if not len(points):
            best.append(None)
            continue
        tied = [t for t, p in zip(trials, points) if p[i] == points[:, i].min()]
        best.append(pareto_front(tied, objectives)[0])  # sorted by number
    return best


def pick_from(front: list[FrozenTrial], rule: Pick, objectives: Objectives) -> FrozenTrial:
    knee = knee_distances(front, objectives)
    if rule.kind == "knee":
        return _argbest(knee, front, knee)
    if rule.kind in ("max", "min"):
        name = rule.name
        if name in objectives.names:
            column = np.array([t.values[objectives.names.index(name)] for t in front], dtype=float)
        else:
            column = np.array([_number(t.user_attrs.get(name)) for t in front], dtype=float)
            if np.all(np.isnan(column)):
                raise UsageError(
                    f"--pick {rule}: unknown objective {name!r}; the study's objectives are {', '.join(objectives.names)}"
                    " (numeric user attrs such as size_kb or macs work too)"
                )
        column = np.where(np.isnan(column), -np.inf if rule.kind == "max" else np.inf, column)
        return _argbest(-column if rule.kind == "max" else column, front, knee)
    # weights: weighted sum of objectives normalized over the front, larger is better.
    goodness = 1.0 - normalized(minimization_values(front, objectives))  # 1 = best on the front
    weights = np.zeros(len(objectives.names))
    for name, weight in rule.weights:
        weights[objectives.index(name, f"--pick {rule}")] = weight
    return _argbest(-(goodness @ weights), front, knee)


def _number(value: Any) -> float:
    try:
        return float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def pick(
    study: optuna.Study, rule: str | Pick | None = None, where: list[str] | list[Filter] = (),
    accuracy_within: float = ACCURACY_WITHIN, max_drop: float = baselines.MAX_DROP,
) -> FrozenTrial:
    """The trial `rule` picks from the front of the feasible trials that pass `where`;
    the knee only among those within `max_drop` of the baseline's accuracy, or without
    one of useful accuracy (`accuracy_within`; see `choose_knee`)."""
    return pick_choice(study, rule, where, accuracy_within, max_drop).trial


def pick_choice(
    study: optuna.Study, rule: str | Pick | None = None, where: list[str] | list[Filter] = (),
    accuracy_within: float = ACCURACY_WITHIN, max_drop: float = baselines.MAX_DROP,
) -> KneeChoice:
    """`pick`, with the trials it picked among and the rule in words."""
    check_within(accuracy_within)
    baselines.check_max_drop(max_drop)
    rule = rule if isinstance(rule, Pick) else Pick.parse(rule)
    filters = [f if isinstance(f, Filter) else Filter.parse(f) for f in where]
    objectives = objectives_of(study)
    for name, _ in rule.weights:  # max:/min: names are checked on the front (user attrs work too)
        objectives.index(name, f"--pick {rule}")
    feasible = feasible_trials(study)
    if not feasible:
        total = len(study.get_trials(deepcopy=False))
        raise UsageError(f"study {study.study_name!r} has no feasible COMPLETE trial yet ({total} trial(s) in all)")
    candidates = apply_filters(feasible, filters, objectives)
    if not candidates:
        raise UsageError(
            f"no feasible trial satisfies {' and '.join(str(f) for f in filters)} "
            f"({len(feasible)} feasible trials in study {study.study_name!r})"
        )
    front = pareto_front(candidates, objectives)
    if rule.kind == "knee":
        return choose_knee(front, objectives, accuracy_within, baselines.find(study.get_trials(deepcopy=False)), max_drop)
    return KneeChoice(pick_from(front, rule, objectives), front, str(rule))


def pick_words(rule: Pick, accuracy_within: float = ACCURACY_WITHIN, choice: KneeChoice | None = None) -> str:
    """The rule as recorded in an export: the knee with its accuracy rule."""
    if rule.kind == "knee" and choice is not None:
        return f"knee, {choice.rule}"
    if rule.kind == "knee" and accuracy_within < 1:
        return f"knee, accuracy within {accuracy_within:g} of the best"
    return str(rule)


def trial_record(trial: FrozenTrial, objectives: Objectives) -> dict:
    """JSON-ready description of a trial: number, values by objective, params, user attrs."""
    return {
        "number": trial.number,
        "values": dict(zip(objectives.names, trial.values or [])),
        "params": dict(trial.params),
        "user_attrs": dict(trial.user_attrs),
    }
