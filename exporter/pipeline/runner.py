"""The runner of the stage graph on this machine: resolves a node's upstream nodes, keys it (its inputs'
hashes, its settings, library versions), and runs it or reuses its cached output in the run directory.

It is the one place that executes nodes (exporter.stages.graph): another executor (a cluster's) resolves
the same nodes the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from exporter.core.rundir import RunDir, StageResult
from exporter.stages.graph import Call, Node


class Runner:
    def __init__(self, run: RunDir, force: bool, console: Console, say: Callable[[str], None]):
        self.run = run
        self.force = force
        self.console = console
        self.say = say
        self.results: dict[str, StageResult] = {}  # by node name, in the order resolved

    def result(self, node: Node) -> StageResult:
        """`node`'s result: run once per runner (after its upstream nodes), or found cached."""
        done = self.results.get(node.name)
        if done is not None:
            return done
        upstream = {name: self.result(each) for name, each in node.reads.items()}
        settings = node.settings(upstream)
        inputs = {name: result.output for name, result in upstream.items()} | dict(node.files)
        later = {name: (lambda each=each: self.result(each).output) for name, each in node.later.items()}

        def run(out) -> dict:
            return node.run(Call(settings, inputs, out, later, self.say))

        with self.console.status(f"[bold]{node.name}[/bold] running…"):
            result = self.run.run_stage(
                node.name, node.output, inputs, settings, run, self.force, node.companions, node.versions()
            )
        if result.cached and node.accept is not None:
            node.accept(result.record)
        self.results[node.name] = result
        state = "cached" if result.cached else f"{result.record['wall_s']:.1f} s"
        self.say(f"{node.name:<16} {node.describe(result.record)}  [{state}] → {result.output}")
        return result
