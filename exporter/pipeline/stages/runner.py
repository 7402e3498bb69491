"""The runner of the stage graph on this machine: resolves a node's upstream nodes, keys it (its inputs'
hashes, its settings, library versions), and runs it or reuses its cached output in the run directory.

It is the one place that executes nodes (exporter.pipeline.stages.graph): another executor (a cluster's)
resolves the same nodes the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from exporter.base.rundir import RunDir
from exporter.pipeline.stages.graph import Call, Node, Result


class Runner:
    def __init__(self, run: RunDir, force: bool, console: Console, say: Callable[[str], None]):
        self.run = run
        self.force = force
        self.console = console
        self.say = say
        self.results: dict[str, Result] = {}  # by node name, in the order resolved

    def result(self, node: Node) -> Result:
        """`node`'s result: run once per runner (after its upstream nodes), or found cached."""
        done = self.results.get(node.name)
        if done is not None:
            return done
        upstream = {name: self.result(each) for name, each in node.reads.items()}
        settings = node.settings(upstream)
        inputs = {name: result.output for name, result in upstream.items()} | dict(node.files)
        later = {name: (lambda each=each: self.result(each).output) for name, each in node.later.items()}

        def run(out) -> dict:
            record = node.run(Call(settings, inputs, out, later, self.say))
            if not isinstance(record, node.record):
                raise TypeError(
                    f"stage {node.name} returned {type(record).__name__}, not {node.record.__name__}"
                )
            return record.as_json()

        with self.console.status(f"[bold]{node.name}[/bold] running…"):
            entry = self.run.run_stage(
                node.name, node.output, inputs, settings, run, self.force, node.companions, node.versions()
            )
        record = node.record.from_json(entry.record)
        if entry.cached and node.accept is not None:
            node.accept(record)
        result = Result(node.name, entry.output, record, entry.cached, entry.record["wall_s"])
        self.results[node.name] = result
        state = "cached" if result.cached else f"{result.wall_s:.1f} s"
        self.say(f"{node.name:<16} {record.describe()}  [{state}] → {result.output}")
        return result
