"""The Optuna sampler named in the spec, with constraints where the sampler takes them."""

from __future__ import annotations

import warnings

import optuna

from search.spec import StudySpec

CONSTRAINTS_ATTR = "constraints"


def constraint_values(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Optuna's constraints_func: values <= 0 are feasible; stored by the searcher."""
    return list(trial.user_attrs.get(CONSTRAINTS_ATTR, []))


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    # `group` and constant_liar are flagged experimental; they are what define-by-run
    # conditional spaces and concurrent trials need.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    constraints = constraint_values if spec.constraints else None
    if spec.sampler == "tpe":
        # constant_liar: concurrent trials see each other, so they do not all explore one spot.
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, constraints_func=constraints,
            n_startup_trials=min(10, max(2, spec.budget.trials // 4)),
        )
    if spec.sampler == "nsga2":
        population = min(20, max(4, spec.budget.trials // 5))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population, constraints_func=constraints)
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, constraints_func=constraints, warn_independent_sampling=False,
            n_startup_trials=min(10, max(2, spec.budget.trials // 4)),
        )
    return optuna.samplers.RandomSampler(seed=seed)
