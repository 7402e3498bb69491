"""Model builders and loading."""
