"""Structured outputs: parse a model's JSON answer into its pydantic schema, and the one repair
prompt sent when it does not validate."""

from __future__ import annotations

import json
import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError

SchemaT = TypeVar("SchemaT", bound=BaseModel)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class StructuredOutputError(ValueError):
    """The answer is not JSON, or not JSON of the schema; ``problems`` says what is wrong."""

    def __init__(self, problems: str) -> None:
        super().__init__(problems)
        self.problems = problems


def _json_text(text: str) -> str:
    fenced = _FENCE.search(text)
    if fenced:
        return fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text.strip()


def parse_structured(text: str, schema: type[SchemaT]) -> SchemaT:
    """The answer as an instance of ``schema``.

    Raises:
        StructuredOutputError: naming the fields that failed.
    """
    try:
        data = json.loads(_json_text(text))
    except json.JSONDecodeError as exc:
        raise StructuredOutputError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in exc.errors()[:10]
        )
        raise StructuredOutputError(problems) from None


def schema_instruction(schema: type[BaseModel]) -> str:
    return "Answer with one JSON object only, no prose, matching this JSON schema:\n" + json.dumps(
        schema.model_json_schema(), separators=(",", ":")
    )


def repair_prompt(schema: type[BaseModel], problems: str) -> str:
    """The follow-up message of the one repair retry."""
    return f"Your previous answer did not match the schema: {problems}. " + schema_instruction(
        schema
    )
