"""An Ultralytics fork as users write one: re-parameterizable blocks in a YOLO26n (see model.py)."""
