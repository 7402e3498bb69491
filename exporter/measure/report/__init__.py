"""Reports (Markdown, self-contained HTML, JSON, plots) and the regression check."""
