"""Running a search.

Launch (validate, start Ray, create or resume the study), the
Optuna ask/tell searcher and its storage writer, leases between drivers, MO-ASHA
and rung trust, the Ray cluster and job submission, what a launch reports, progress
on the terminal, stop signals and Ray's noise.

May import: every layer below (`search.core`, `search.tasks`, `search.trial`,
`search.results`), `spaces`, `objectives`.
"""
