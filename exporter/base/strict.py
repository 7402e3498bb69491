"""The base of every recipe section: a strict, frozen pydantic model (an unknown key is refused, a recipe
once read never changes). A field may name the command-line flag that sets it (`flagged`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def flagged(default: Any, flag: str, help: str, **constraints: Any) -> Any:
    """A field that the command-line option `flag` sets, with `help` as its help text (the default is
    appended where it is shown)."""
    return Field(default, description=help, json_schema_extra={"flag": flag}, **constraints)
