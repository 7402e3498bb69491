"""The fuser on models nobody here wrote: every timm family with re-parameterizable blocks and
Ultralytics' YOLOs, fused and proved, leaving no more BatchNorms and convolutions than each library's
own deploy path (the same rows `reparam-export bench-fuse --zoo` prints)."""

import pytest

from exporter.measure.studies.fuse import ZOO, zoo_row


@pytest.mark.slow
@pytest.mark.parametrize("library, name, size, second", ZOO, ids=[entry[1] for entry in ZOO])
def test_field_model_is_fused_and_proved(library, name, size, second):
    pytest.importorskip(library, reason=f"pip install {library} (a test dependency)")
    row = zoo_row(library, name, size, second)
    assert row.ok and row.not_fused == [], row
    assert row.left[0] <= row.library_left[0], "no more BatchNorms left than the library's deploy path"
    assert row.left[1] <= row.library_left[1], "no more convolutions left than the library's deploy path"
    assert row.left[0] < row.before[0] or row.before[0] == row.library_left[0], "it fused something"
    if name in FOLDABLE:
        assert row.left[0] == 0, "every BatchNorm follows a convolution: none is left"


# every BatchNorm of these follows a convolution (found from the forward, whatever its attribute name,
# timm's BatchNormAct2d included), so none may be left
FOLDABLE = {"ese_vovnet19b_dw", "efficientvit_b0", "resnet18", "regnetx_002", "mobilenetv4_conv_small"}
