"""Instruction / language-modelling data: JSON Lines in one of three formats, checked line by line.

{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}
{"prompt": ..., "completion": ...}
{"text": ...}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypertweaks.data.tables import DataError

ROLES = ("system", "user", "assistant", "tool")


def record_format(record: dict[str, Any]) -> str | None:
    if "messages" in record:
        return "messages"
    if "prompt" in record or "completion" in record:
        return "prompt-completion"
    if "text" in record:
        return "text"
    return None


def _check(record: Any, where: str, text_field: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if text_field != "text" and text_field in record:
        record = {**record, "text": record[text_field]}
    kind = record_format(record)
    if kind is None:
        raise DataError(
            f"{where}: no 'messages', 'prompt'/'completion' or {text_field!r} field "
            f"(found: {', '.join(sorted(record)) or 'none'})"
        )
    if kind == "messages":
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise DataError(f"{where}: messages[{i}] needs 'role' and 'content'")
            if message["role"] not in ROLES:
                raise DataError(
                    f"{where}: messages[{i}] has role {message['role']!r}; use one of "
                    f"{', '.join(ROLES)}"
                )
            if not isinstance(message["content"], str):
                raise DataError(f"{where}: messages[{i}].content must be a string")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{where}: no assistant message, so nothing to learn from")
    elif kind == "prompt-completion":
        for key in ("prompt", "completion"):
            if not isinstance(record.get(key), str):
                raise DataError(f"{where}: {key!r} is missing or not a string")
        if not record["completion"].strip():
            raise DataError(f"{where}: 'completion' is empty, so there is nothing to learn")
    elif not isinstance(record["text"], str) or not record["text"].strip():
        raise DataError(f"{where}: {text_field!r} is empty or not a string")
    return kind, record


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise KeyError(key)
        seen[key] = value
    return seen


def read_jsonl(path: Path | str, role: str, text_field: str = "text") -> list[dict[str, Any]]:
    """Records of one file, all of one format; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{role} file {str(path)!r} does not exist")
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        raise DataError(
            f"{role} file {str(path)!r}: causal-lm reads JSON Lines (.jsonl), one example per line"
        )
    records, kinds = [], {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                loaded = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{where}: not valid JSON ({error.msg} at column {error.colno})"
                ) from None
            except KeyError as error:
                raise DataError(
                    f"{where}: field {error.args[0]!r} is given twice in one object; JSON readers "
                    "silently keep the last one, so remove the one you did not mean"
                ) from None
            kind, record = _check(loaded, where, text_field)
            kinds.setdefault(kind, number)
            records.append(record)
    if not records:
        raise DataError(f"{role} file {str(path)!r} has no examples")
    if len(kinds) > 1:
        shown = ", ".join(f"{kind} (first on line {line})" for kind, line in kinds.items())
        raise DataError(f"{path}: mixes formats: {shown}; use one format per file")
    return records
