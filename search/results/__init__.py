"""A study's results: fronts, export, retrain, plots, tracking.

The Pareto front and its reports and tables, the trade against
the baseline, exporting a pinned config, retraining what ships, plots, the
optuna-dashboard note and artifacts, and MLflow tracking.

May import: `search.core`, `search.tasks`, `search.trial`, `spaces`, `objectives`.
"""
