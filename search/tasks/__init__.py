"""Tasks and the user's code.

The `Task` type and batching, loading a task (built-in
sets, array files, image folders, the NAS-Bench-201 table, a user factory),
references to user code and the resolved plugins, trained weights to start from,
and the baseline's params.

May import: `search.core`, `spaces`.
"""
