"""The envelope every command's output is wrapped in (JSON and YAML show it whole)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Envelope:
    """What one command did: its data on success, its error otherwise."""

    command: str
    status: str
    exit_code: int
    data: Mapping[str, Any]
    started: datetime
    duration_ms: float
    messages: tuple[str, ...] = field(default_factory=tuple)
    error: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "command": self.command,
            "status": self.status,
            "exit_code": self.exit_code,
            "data": dict(self.data),
            "timing": {
                "started": self.started.isoformat(),
                "duration_ms": round(self.duration_ms, 3),
            },
            "messages": list(self.messages),
        }
        if self.error is not None:
            out["error"] = dict(self.error)
        return out
