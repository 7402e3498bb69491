"""`check`'s findings in the forms CI systems read: JUnit XML (one test case per metric and per artifact
found on one side only) and a Markdown summary for GitHub Actions' job page ($GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from exporter.base.artifacts import atomic_output
from exporter.measure.check import Finding


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _detail(finding: Finding) -> str:
    values = f"baseline {_number(finding.baseline)}, current {_number(finding.current)}"
    limit = f", limit {_number(finding.limit)}" if finding.limit is not None else ""
    return f"{finding.status}: {values}{limit}" + (f"; {finding.why}" if finding.why else "")


def junit(findings: list[Finding], suite: str) -> str:
    """JUnit XML: a test case per finding (class: the artifact, name: the metric or 'artifact'), failed
    or skipped with its cause."""
    root = ET.Element("testsuites")
    cases = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(findings)),
        failures=str(sum(f.failed for f in findings)),
        skipped=str(sum(f.skipped for f in findings)),
    )
    for finding in findings:
        case = ET.SubElement(cases, "testcase", classname=finding.artifact, name=finding.metric or "artifact")
        if finding.failed:
            ET.SubElement(case, "failure", message=_detail(finding), type=finding.status)
        elif finding.skipped:
            ET.SubElement(case, "skipped", message=_detail(finding))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(path: Path, findings: list[Finding], suite: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(junit(findings, suite))


def step_summary(findings: list[Finding], title: str, last_line: str) -> str:
    """A Markdown section: the verdict, a table of every finding, and the check's last line."""
    failed = [f for f in findings if f.failed]
    verdict = f"**failed** ({len(failed)} of {len(findings)})" if failed else "**passed**"
    lines = [f"### {title}: {verdict}", "", "| artifact | metric | baseline | current | limit | status |"]
    lines.append("|---|---|---|---|---|---|")
    for f in findings:
        status = ("skipped: " if f.skipped else "") + f.status + (f" ({f.why})" if f.why else "")
        cells = [
            f.artifact,
            f.metric or "",
            _number(f.baseline),
            _number(f.current),
            _number(f.limit),
            status,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", last_line, ""]) + "\n"


def append_step_summary(path: Path, text: str) -> None:
    """Append to GitHub's step summary file (it collects every step's sections)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
