"""Train the fork's YOLO26n on the demo shapes and ship its best.pt as yolo26n_shapes.pt.

    reparam-export demo-data --out data/shapes --split train --split val   # from the repository root
    python examples/ultralytics_fork/train.py --data data/shapes/data.yaml

Ultralytics' own trainer on CPU (validation once, at the end); the checkpoint is copied as
Ultralytics saved it.
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="the shapes' data.yaml (reparam-export demo-data)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--fraction", type=float, default=0.5, help="of the training images")
    parser.add_argument("--project", default="runs/ultralytics_fork")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    import torch
    from shapes_fork.model import ForkTrainer
    from ultralytics import YOLO

    torch.manual_seed(0)
    start = time.perf_counter()
    model = YOLO("yolo26n.yaml")
    model.train(
        trainer=ForkTrainer, data=args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
        fraction=args.fraction, device="cpu", workers=2, amp=False, plots=False, seed=0, deterministic=True,
        val=False,
        project=args.project, name="yolo26n_shapes", exist_ok=True,
    )  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    best = Path(model.trainer.best)
    shutil.copyfile(best, HERE / "yolo26n_shapes.pt")
    print(f"trained {args.epochs} epochs in {minutes:.1f} min; {best} → {HERE / 'yolo26n_shapes.pt'}")


if __name__ == "__main__":
    main()
