"""Stages: plain functions from artifacts and settings to one output artifact."""
