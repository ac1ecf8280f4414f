"""The JSON bodies the deploy API accepts (strict: unknown fields and wrong
types are refused)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field



class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PreviewBody(_Body):
    usage: ClassVar[str] = ('send {"kind": "db-prep" | "db-create" | "rollout" | "rollback" | "patroni-redeploy", '
                            '"parameters": {"NAME": "value", ...}}')
    kind: Literal["db-prep", "db-create", "rollout", "rollback", "patroni-redeploy"]
    parameters: dict[str, str] = Field(default_factory=dict, max_length=100)


class DeployBody(_Body):
    usage: ClassVar[str] = 'send {"preview": <id of a preview you made>}'
    preview: int = Field(ge=1, le=2**31 - 1)


class ApproveBody(_Body):
    usage: ClassVar[str] = 'send {"confirm": "<the target namespace, typed>"}'
    confirm: str = Field(min_length=1, max_length=253)
