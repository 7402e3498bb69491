"""The bottom layer: numerical comparison, timing, complexity and graph helpers used by every layer above."""
