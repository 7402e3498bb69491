"""The stage graph's runner: upstream first, each node once, settings from upstream records, a node read
`later` run only when asked for and outside the key, typed records (in the manifest as JSON, read back as
the same type), a cached record re-checked by `accept`."""

import json
from dataclasses import dataclass, field

import pytest
from rich.console import Console

from exporter.base.errors import UserError
from exporter.base.rundir import RunDir
from exporter.pipeline.stages.graph import Node, Record, fixed
from exporter.pipeline.stages.runner import Runner


@dataclass(frozen=True)
class Wrote(Record):
    keep: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"keeps {self.keep}"


def runner(root, force=False) -> tuple[Runner, list[str]]:
    lines = []
    return Runner(RunDir(root), force, Console(quiet=True), lines.append), lines


def writer(text, record=None, ran=None):
    """A node run that writes `text` (and what it read) and records who ran."""

    def run(call):
        read = {name: path.read_text() for name, path in call.inputs.items()}
        call.output.write_text(json.dumps({"text": text, "read": read, "settings": call.settings}))
        if ran is not None:
            ran.append(text)
        return Wrote(**(record or {}))

    return run


def graph(ran, asked=False, limit=3):
    source = Node("source", "a.json", writer("a", {"keep": ["x"]}, ran), Wrote, fixed({"n": 1}))
    ranking = Node("ranking", "r.json", writer("r", ran=ran), Wrote, fixed({"n": 2}))

    def search(call):
        if asked:
            call.later["ranking"]()  # only on demand
        return writer("s", ran=ran)(call)

    return Node(
        "search",
        "s.json",
        search,
        Wrote,
        lambda upstream: {"keep": upstream["a"].record.keep, "limit": limit},
        reads={"a": source},
        later={"ranking": ranking},
    )


def test_upstream_first_settings_from_records_and_later_only_on_demand(tmp_path):
    ran = []
    run, lines = runner(tmp_path)
    result = run.result(graph(ran))
    assert ran == ["a", "s"], "the ranking is not run unless asked for"
    assert json.loads(result.output.read_text())["settings"] == {"keep": ["x"], "limit": 3}
    assert lines[0].startswith("source") and "keeps ['x']" in lines[0] and lines[1].startswith("search")
    assert result.record == Wrote() and not result.cached

    ran.clear()
    run, _ = runner(tmp_path)
    assert run.result(graph(ran, asked=True)).cached, "a node read later is not part of the key"
    assert ran == []


def test_a_node_runs_once_and_a_changed_setting_reruns_it_alone(tmp_path):
    ran = []
    run, _ = runner(tmp_path)
    node = graph(ran, asked=True)
    run.result(node)
    run.result(node)
    assert ran == ["a", "r", "s"]

    ran.clear()
    again, _ = runner(tmp_path)
    again.result(graph(ran, limit=4))
    assert ran == ["s"]


def test_a_run_returning_another_record_is_refused(tmp_path):
    node = Node("odd", "o.json", lambda call: call.output.write_text("{}") and {"keep": []}, Wrote, fixed({}))
    with pytest.raises(TypeError, match="returned dict, not Wrote"):
        runner(tmp_path)[0].result(node)
    assert not (tmp_path / "o.json").exists()


def test_a_cached_record_is_checked_again(tmp_path):
    def refuse(record):
        raise UserError("refused")

    def node(accept=None):
        return Node("only", "o.json", writer("o"), Wrote, fixed({}), accept=accept)

    runner(tmp_path)[0].result(node())
    with pytest.raises(UserError, match="refused"):
        runner(tmp_path)[0].result(node(refuse))
