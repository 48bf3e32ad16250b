"""Corrections with history (issue 17): patient and study attributes, merges, moves, reverts."""
