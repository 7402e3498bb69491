"""Numerical comparison, timing, complexity and graph helpers used by the rooms above."""
