"""The JSON bodies the restore API accepts, one pydantic model per body.
Unknown fields and wrong types are refused (strict mode), so a typo never
silently becomes a default."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


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


def describe(exc: ValidationError) -> str:
    """A short message naming the fields and what is wrong, without echoing
    the values sent."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)[:500] or "invalid body"
