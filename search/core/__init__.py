"""The vocabulary every stage shares.

The study spec and its errors, "NAME OP VALUE" conditions, the names of what paretune
records on trials and studies, Pareto dominance maths (non-dominated sorting, crowding,
hypervolume), opening an Optuna storage and riding out its outages, a TOML writer, and
Optuna's internals, reached in one module.

May import: nothing of paretune outside `search.core` (third-party libraries only).
"""
