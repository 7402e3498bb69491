"""YOLO26n with the fork's blocks in its backbone, and a trainer that trains it as it is (Ultralytics'
own trainer would rebuild the model from its YAML and lose them)."""

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import DetectionModel

from shapes_fork.blocks import AKConv, DamoRepConv, RefConv

REPLACED = {  # layer index of yolo26n.yaml → the fork's block (same channels and stride)
    1: lambda: AKConv(16, 32, num_param=5, s=2),
    3: lambda: RefConv(64, 64, 3, 2),
    5: lambda: DamoRepConv(128, 128, 3, 2),
}


def build(nc: int, verbose: bool = False) -> DetectionModel:
    """yolo26n for `nc` classes, with layers 1, 3 and 5 replaced by the fork's blocks."""
    model = DetectionModel("yolo26n.yaml", nc=nc, verbose=verbose)
    for index, make in REPLACED.items():
        old, block = model.model[index], make()
        block.i, block.f, block.type, block.np = (
            old.i,
            old.f,
            type(block).__name__,
            sum(p.numel() for p in block.parameters()),
        )
        model.model[index] = block
    return model


class ForkTrainer(DetectionTrainer):
    def get_model(self, cfg=None, weights=None, verbose=True):
        return build(self.data["nc"], verbose=verbose)
