"""The Optuna sampler named in the spec.

Constraints reach every sampler through the trials themselves: the searcher sets each
finished trial's violations as Optuna's constraint values (`search.driver.tell.constraint_values`),
which TPE, NSGA-II and GP read as `trial.constraints` (Optuna 5 deprecated the
samplers' `constraints_func`)."""

from __future__ import annotations

import warnings

import optuna

from search.core.spec import StudySpec


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    # `group` and constant_liar are flagged experimental; they are what define-by-run
    # conditional spaces and concurrent trials need.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if spec.sampler == "tpe":
        # constant_liar: concurrent trials see each other, so they do not all explore one spot.
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True,
            n_startup_trials=min(10, max(2, spec.budget.trials // 4)),
        )
    if spec.sampler == "nsga2":
        population = min(20, max(4, spec.budget.trials // 5))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, warn_independent_sampling=False,
            n_startup_trials=min(10, max(2, spec.budget.trials // 4)),
        )
    return optuna.samplers.RandomSampler(seed=seed)
