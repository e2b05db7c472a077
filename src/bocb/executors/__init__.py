"""Executors run trials for the study runner: local process slots, or Ray tasks."""
