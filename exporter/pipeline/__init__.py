"""A build: the recipe, the stage graph and its stages (stages/), one package per target (targets/), the
evaluation and benchmark nodes, the builder that runs the graph, and the Python API."""
