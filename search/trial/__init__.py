"""One trial, as a Ray worker runs it.

Build the model from its params, train it,
compress and deploy it, measure it (here or on the node the spec names), the
untrained pre-check, the preflight that dry-runs every choice before a launch, and
trainings shared by several variants.

May import: `search.core`, `search.tasks`, `spaces`, `objectives`.
"""
