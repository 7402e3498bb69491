"""report.html: real tables built from the same sections as report.md, plots inline, the run's settings
and the tolerance of every check, nothing loaded from outside; latency-vs-mAP labels never overlap."""

import base64
import itertools
import json
import re
from html.parser import HTMLParser

import pytest

from exporter.measure.report import plots
from exporter.measure.report.render import write_report
from tests.test_report import make_run


class Page(HTMLParser):
    """What the tests read of a page: each table (under the last heading) as header and body rows, every
    src/href, the <img> sources, and the visible text (not <script> or <style>)."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: dict[str, dict[str, list]] = {}
        self.links: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self._heading: list[str] | None = None
        self._title = ""
        self._part = ""
        self._cell: list[str] | None = None
        self._hidden = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[name] for name in ("src", "href") if name in attrs]
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag in ("h1", "h2"):
            self._heading = []
        elif tag == "table":
            self.tables[self._title] = {"header": [], "rows": []}
        elif tag in ("thead", "tbody"):
            self._part = tag
        elif tag == "tr" and self._part == "tbody":
            self.tables[self._title]["rows"].append([])
        elif tag in ("th", "td"):
            self._cell = []
        elif tag in ("script", "style"):
            self._hidden = True

    def handle_endtag(self, tag):
        if tag in ("h1", "h2"):
            self._title, self._heading = "".join(self._heading).strip(), None
        elif tag in ("th", "td"):
            table = self.tables[self._title]
            (table["header"] if tag == "th" else table["rows"][-1]).append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("script", "style"):
            self._hidden = False

    def handle_data(self, data):
        for sink in (self._heading, self._cell):
            if sink is not None:
                sink.append(data)
        if not self._hidden:
            self.text.append(data)


def checked_run(root):
    """The stand-in run with the records a real build writes: the fuse proof, FP32 held to its tolerance,
    INT8 recorded against it with its collapse slope, what a consumer that sets no precision computes,
    the libraries' versions, a deferred TensorRT engine, the INT8 goal, and timings of 200 and 30 calls."""
    run = make_run(root)
    manifest = json.loads((run / "manifest.json").read_text())
    stages = manifest["stages"]
    parity = {"max_abs_ref": 0.65, "tolerance": 2e-5, "output": 0, "note": ""}
    proof = {**parity, "max_abs_err": 3e-15, "tolerance": 1e-9, "ratio": 3e-6, "ok": True}
    stages["fuse"]["check"]["model_parity"] = proof
    stages["fuse"]["versions"] = {"reparam-export": "0.1.0+abcdef012345", "torch": "2.14.1"}
    stages["openvino.fp32"].update(precision="fp32", versions={"openvino": "2026.4.1"})
    stages["openvino.fp32"]["check"] = {**parity, "max_abs_err": 1e-5, "ratio": 0.5, "ok": True}
    plain = {**parity, "max_abs_err": 1.2e-5, "ratio": 0.6, "ok": True}
    stages["openvino.fp32"]["plain_consumer"] = {"default_precision": "bf16", "check": plain}
    stages["openvino.fp32"]["runtime"] = {"INFERENCE_PRECISION_HINT": "f32"}
    stages["openvino.int8"].update(precision="int8")
    stages["openvino.int8"]["check"] = {**parity, "max_abs_err": 0.08, "ratio": 4000.0, "ok": False}
    stages["openvino.int8"]["int8"] = {"collapse": {"slope": 0.48, "output": 0, "threshold": 0.01}}
    stages["openvino.int8"]["plain_consumer"] = {"default_precision": "bf16"}
    stages["openvino.int8"]["runtime"] = {"INFERENCE_PRECISION_HINT": "bf16"}  # --ov-int8-float bf16
    manifest["deferred"] = {
        "tensorrt": {
            "artifact": "TensorRT engine",
            "runtime": "TensorRT",
            "reason": "TensorRT is not installed",
            "bundle": "runs/x/tensorrt/bundle/build_engine.sh",
        }
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    evaluation = json.loads((run / "eval.json").read_text())
    evaluation["int8_goal"] = {"openvino.int8": {"drop_points": 1.0, "met": False}}
    (run / "eval.json").write_text(json.dumps(evaluation))
    bench = json.loads((run / "bench.json").read_text())
    bench["results"]["openvino.fp32"].update(iterations=200, throughput_fps=410.0)
    bench["results"]["openvino.int8"].update(iterations=30)
    (run / "bench.json").write_text(json.dumps(bench))
    return run


@pytest.fixture
def report(tmp_path):
    return write_report(checked_run(tmp_path / "run"), tmp_path / "out")


def markdown_tables(markdown: str) -> list[list[list[str]]]:
    """The tables of report.md, each as rows of cells (header first, separator left out; `code` spans as
    their text, as HTML shows them)."""
    tables, current = [], None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            current = None
        elif not line.startswith("|---"):
            if current is None:
                current = []
                tables.append(current)
            current.append([cell.strip().replace("`", "") for cell in line.strip("|").split(" | ")])
    return tables


def test_tables_have_headers_and_a_row_per_item(report):
    tables = Page(report["html"].read_text()).tables
    counts = {title: len(t["rows"]) for title, t in tables.items()}
    assert counts == {
        "damoyolo_ns": 3,
        "Published DAMO-YOLO targets": 3,
        "INT8 goal": 1,
        "Precision at run time": 2,
        "TensorRT": 1,
        "Build times": 3,
        "Gated checks": 3,
        "Recorded errors": 2,
        "Provenance": 4,
        "Settings (the recipe)": 3,
    }
    lead = tables["damoyolo_ns"]
    assert lead["header"][:4] == ["artifact", "mAP", "mAP50", "p50 ms"]
    assert [row[0] for row in lead["rows"]] == ["torch.fp32", "openvino.fp32", "openvino.int8"]
    assert lead["rows"][2][:4] == ["openvino.int8", "30.0", "49.0", "3.00"]
    assert tables["Published DAMO-YOLO targets"]["header"] == ["target", "published", "ours"]
    assert [row[0] for row in tables["Build times"]["rows"]] == ["fuse", "openvino.fp32", "openvino.int8"]
    for table in tables.values():
        assert table["header"] and all(len(row) == len(table["header"]) for row in table["rows"])


def test_html_tables_are_the_markdown_tables(report):
    """One source for both formats: the same cells in the same order."""
    tables = Page(report["html"].read_text()).tables.values()
    assert [[t["header"], *t["rows"]] for t in tables] == markdown_tables(report["markdown"].read_text())


def test_settings_and_check_tolerances_are_shown(report):
    tables = Page(report["html"].read_text()).tables
    settings = tables["Settings (the recipe)"]["rows"]
    assert ["name", "damoyolo_ns"] in settings and ["calibration.count", "64"] in settings
    gated, recorded = tables["Gated checks"], tables["Recorded errors"]
    assert gated["header"] == ["stage", "artifact", "check", "error", "tolerance", "err/tol", "result"]
    assert gated["rows"] == [
        ["fuse", "", "float64 proof vs training form", "3e-15", "1e-09", "3e-06", "pass"],
        ["openvino.fp32", "openvino.fp32", "max abs err vs FP32 reference", "1e-05", "2e-05", "0.5", "pass"],
        [
            "openvino.int8",
            "openvino.int8",
            "INT8 slope on FP32 (collapse below)",
            "0.48",
            "0.01",
            "0.021",
            "pass",
        ],
    ]
    assert recorded["rows"] == [
        [
            "openvino.fp32",
            "openvino.fp32",
            "consumer setting no precision vs FP32 reference",
            "1.2e-05",
            "2e-05",
            "0.6",
            "f32",
        ],
        [
            "openvino.int8",
            "openvino.int8",
            "max abs err vs FP32 reference",
            "0.08",
            "2e-05",
            "4e+03",
            "recorded (not held to the FP32 tolerance)",
        ],
    ]


def test_the_report_says_what_a_reader_needs_to_trust_it(report):
    """The INT8 goal per INT8 artifact, p99 only of enough calls, throughput, the precision each IR
    computes in, why TensorRT was not built, what DAMO-YOLO's latency compares and that its weights are
    random, and which code and libraries made the run."""
    tables = Page(report["html"].read_text()).tables
    assert tables["INT8 goal"]["rows"] == [["openvino.int8", "30.00", "31.00", "-1.00", "NOT met"]]
    lead = {
        row[0]: dict(zip(tables["damoyolo_ns"]["header"], row, strict=True))
        for row in tables["damoyolo_ns"]["rows"]
    }
    assert lead["openvino.fp32"]["p99 ms"] == "5.00" and lead["openvino.fp32"]["calls timed"] == "200"
    assert lead["openvino.int8"]["p99 ms"] == "— (30 calls)", "a p99 of 30 calls is their maximum"
    assert lead["openvino.fp32"]["throughput fps"] == "410.00"
    precision = {row[0]: row[1:] for row in tables["Precision at run time"]["rows"]}
    assert precision["openvino.fp32"][1].startswith("f32 (layers marked precise; default here bf16)")
    assert precision["openvino.int8"][1] == "bf16, the precision the runtime chooses"
    assert precision["openvino.fp32"][0] == "f32 (INFERENCE_PRECISION_HINT=f32)"
    assert precision["openvino.int8"][0] == "bf16 (INFERENCE_PRECISION_HINT=bf16)", "as its stage compiled it"
    assert tables["TensorRT"]["rows"] == [
        [
            "not built",
            "TensorRT is not installed",
            "bash runs/x/tensorrt/bundle/build_engine.sh where TensorRT runs",
        ]
    ]
    targets = {row[0]: row[2] for row in tables["Published DAMO-YOLO targets"]["rows"]}
    assert targets["DAMO-YOLO-NS weights"].startswith("random (seeded)")
    cpu = targets["DAMO-YOLO-NS CPU OpenVINO (Intel Xeon 8163, batch 1, no post-processing), 416"]
    assert cpu.startswith("openvino.fp32: 4.10 ms on test cpu, 2 threads")
    provenance = dict(tables["Provenance"]["rows"])
    assert provenance["reparam-export"] == "0.1.0+abcdef012345" and provenance["openvino"] == "2026.4.1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", provenance["report written"])


def test_page_is_self_contained_text_not_markdown(report):
    page = Page(report["html"].read_text())
    assert len(page.images) == 2
    for source in page.images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.partition(",")[2]).startswith(b"\x89PNG")
    assert all(link.startswith("data:") for link in page.links), page.links
    text = "".join(page.text)
    assert not re.search(r"^\s*\|.*\|\s*$|\|\s*-{3,}\s*\|", text, re.MULTILINE), "Markdown table syntax"
    assert "Not measured for torch.fp32: latency (not in bench.json)" in text


def point(artifact, ms, map_):
    return {"artifact": artifact, "p50_ms": ms, "map": map_}


@pytest.mark.parametrize("spread", [1.0, 1.1], ids=["latencies within 2%", "latencies 10% apart"])
def test_labels_of_equal_map_points_do_not_overlap(spread):
    rows = [
        point("onnx.fp32", 4.00, 0.31),
        point("openvino.fp32", 4.00 * (1 + 0.01 * spread), 0.31),
        point("openvino.fp16", 4.00 * (1 + 0.02 * spread), 0.31),
        point("openvino.int8", 3.0, 0.30),
        point("torch.fp32", None, 0.31),
    ]
    figure = plots.latency_vs_map_figure(rows, [("DAMO-YOLO-NS CPU (published)", 4.08, 0.323)])
    renderer = figure.canvas.get_renderer()
    labels = figure.axes[0].texts
    assert sorted(label.get_text() for label in labels) == sorted(
        ["onnx.fp32", "openvino.fp32", "openvino.fp16", "openvino.int8", "DAMO-YOLO-NS CPU (published)"]
    )
    boxes = {label.get_text(): label.get_window_extent(renderer) for label in labels}
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
        assert not box_a.overlaps(box_b), f"labels {a} and {b} overlap"
