"""Evaluations that need no database: in-memory worlds whose truth is known, run through the same
code as production."""
