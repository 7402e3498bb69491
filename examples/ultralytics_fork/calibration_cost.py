"""NNCF INT8 calibration of a built run's OpenVINO model (statistics over batches of images, as builds
take them, and one image at a time) against FP32 inference of the same images, in alternating rounds
(2 threads for inference, as on the project's machine):

    python examples/ultralytics_fork/calibration_cost.py --run runs/x --data data/shapes/data.yaml
"""

import argparse
import json
import time
from pathlib import Path

import openvino as ov

from exporter.base.data import calibration
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.targets.openvino.ir import STATISTICS_BATCH, quantize
from exporter.pipeline.targets.openvino.runtime import OpenVinoRunner


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a run built with --target openvino")
    parser.add_argument("--data", required=True, help="calibration images: a folder or a data.yaml")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    recipe = Recipe.model_validate(json.loads((args.run / "manifest.json").read_text())["recipe"])
    images, _ = calibration.select(args.data, args.count, 0, tuple(recipe.input_size), recipe.preprocess)
    onnx = args.run / "openvino" / "model.sim.onnx"
    for round_ in range(args.rounds):
        start = time.perf_counter()
        runner = OpenVinoRunner(ov.convert_model(str(onnx)), threads=2)
        for batch in images.batches():
            runner.infer(batch)
        fp32 = time.perf_counter() - start
        times = {}
        for batch in (STATISTICS_BATCH, 1):
            start = time.perf_counter()
            quantize(ov.convert_model(str(onnx)), images, (), recipe.openvino.int8_preset, batch)
            times[batch] = time.perf_counter() - start
        batched, single = times[STATISTICS_BATCH], times[1]
        print(
            f"round {round_}: FP32 inference of {args.count} images (read, resized, run) {fp32:.1f} s; "
            f"INT8 calibration, statistics over batches of {STATISTICS_BATCH}: {batched:.1f} s "
            f"({batched / fp32:.2f}x), one image at a time: {single:.1f} s ({single / fp32:.2f}x)"
        )


if __name__ == "__main__":
    main()
