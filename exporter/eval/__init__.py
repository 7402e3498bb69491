"""Numerical comparison and (later) accuracy evaluation."""
