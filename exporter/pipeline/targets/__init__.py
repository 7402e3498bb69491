"""Targets: one package per deployment target (its descriptor, settings, stages and runtime), the
registry naming them (registry) and the table of their descriptors (table).

A descriptor (target.Target) says everything that differs between targets: its folder in a run, its
precisions, the libraries it needs, its recipe section, how it picks the AKConv lowering, the stages it
declares (`nodes(plan)`, exporter.pipeline.stages.graph), how a runner of its artifacts is loaded, and how
its INT8 accuracy search quantizes. The CLI, doctor, the pipeline and its checks read the table; a new
target is one package here plus its line in registry.REGISTRY.
"""
