"""Redaction benchmarks: what masking secrets costs on what tool calls carry.

``RedactText`` times ``Redactor.text`` on 1 MB of text of three kinds: source code (the
standard library's own), base64 (a dump of binary data: every character may start a
token) and JSON (many ``"name": value`` pairs), and on a short error message, the most
common thing redacted. ``RedactCall`` times ``Redactor.tool_call`` of an ``exec`` call
(a command line and 4 KiB of output) and of a ``write_file`` of a 2 KB source file, the
call ``benchmarks/lifecycle_bench.py`` records.

Every built-in pattern starts with literal text and assignments are found by searching for
the words secret names contain, so the cost stays a few tens of milliseconds per megabyte
and microseconds per short value.
"""

from __future__ import annotations

import base64
import json
import sysconfig
from pathlib import Path

from benchmarks.support import text_content
from changeledger.domain.models import ToolCall
from changeledger.domain.redact import Redactor

MEGABYTE = 1_000_000


def _source_code(size: int) -> str:
    library = Path(sysconfig.get_paths()["stdlib"])
    out: list[str] = []
    total = 0
    for path in sorted(library.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        out.append(text)
        total += len(text)
        if total >= size:
            break
    return "".join(out)[:size]


class RedactText:
    params = ("code", "base64", "json", "message")
    param_names = ("text",)

    def setup(self, kind: str) -> None:
        self.redactor = Redactor()
        if kind == "code":
            self.text = _source_code(MEGABYTE)
        elif kind == "base64":
            raw = bytes(range(256)) * (MEGABYTE // 342)
            self.text = base64.encodebytes(raw).decode()
        elif kind == "json":
            rows = [
                {"name": f"n{i}", "token_count": i, "path": f"src/f{i}.py"} for i in range(16000)
            ]
            self.text = json.dumps(rows)
        else:
            self.text = "tool deploy failed: upstream refused the request for user me (403)"

    def time_text(self, kind: str) -> None:
        self.redactor.text(self.text)


class RedactCall:
    params = ("exec", "write_file")
    param_names = ("call",)

    def setup(self, kind: str) -> None:
        self.redactor = Redactor()
        if kind == "exec":
            output = _source_code(4096)
            self.call = ToolCall(
                "exec",
                {"argv": ["sh", "-c", "FOO=1 make test && mysql --password=x -e 'select 1'"]},
                result={"argv": ["sh", "-c", "make test"], "exit_code": 0, "output_tail": output},
            )
        else:
            content = text_content("bench").decode()
            self.call = ToolCall(
                "write_file",
                {"path": "src/pkg/module.py", "content": content},
                result={"path": "src/pkg/module.py", "created": False, "size": len(content)},
                resource_refs=("src/pkg/module.py",),
            )

    def time_tool_call(self, kind: str) -> None:
        self.redactor.tool_call(self.call)
