"""The JSON bodies the restore API accepts, one pydantic model per body.
Unknown fields and wrong types are refused (strict mode), so a typo never
silently becomes a default.  ``api_endpoint(..., body=<model>)`` validates
each body before the view runs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateBody(_Body):
    backup: str = Field(max_length=255)
    target: str = Field(max_length=63)
    mode: Literal["online", "offline"]
    reason: str = Field(max_length=2000)
    ticket: str = Field(default="", max_length=100)
    acknowledge_unverified: bool = False


class CommentBody(_Body):
    comment: str = Field(default="", max_length=2000)


class DiscardBody(_Body):
    confirm: str = Field(max_length=63)
