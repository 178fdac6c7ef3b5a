"""Raises on import, as a file with a bug would."""

raise ImportError("this module is broken on purpose")
