"""Re-parameterizable blocks (train form + deploy form), the fuser, and how AKConv's sampling becomes ONNX
(lowering/)."""

from exporter.blocks.convbn import ConvAct, ConvBN, fold_conv_bn
from exporter.blocks.refconv import RefConv
from exporter.blocks.repconv import QARepVGG, RepConv, YOLOv7RepConv

OUR_BLOCKS = (ConvBN, RepConv, YOLOv7RepConv, QARepVGG, RefConv)

__all__ = [
    "OUR_BLOCKS",
    "ConvAct",
    "ConvBN",
    "QARepVGG",
    "RefConv",
    "RepConv",
    "YOLOv7RepConv",
    "fold_conv_bn",
]
