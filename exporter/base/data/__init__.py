"""Datasets: the synthetic shapes set, COCO-format reading, preprocessing."""
