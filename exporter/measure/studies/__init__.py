"""The benchmark commands that measure README's figures, each printing ratios measured side by side."""
