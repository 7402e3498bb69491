"""Model families, one object each (demo, DAMO-YOLO, Ultralytics): builders, checkpoint loading, decoding."""
