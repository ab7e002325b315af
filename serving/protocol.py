"""Rows in, rows out, for both KServe protocols.

Every predictor works on a list of row dicts. V1 carries them as ``{"instances": [...]}`` and
answers ``{"predictions": [...]}``. V2 (Open Inference Protocol) carries either one BYTES input
named ``instances`` holding a JSON document per row, or one input per column; it answers one
output per field (FP64 for numbers, BYTES with JSON for anything else).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

# The largest magnitude a served number may have: beyond it a feature is infinite in the float32
# the boosters read (XGBoost refuses the row), and an integer fact is no longer exact in a double.
MAX_NUMBER = 1e15


class _NotFinite:
    """Where the parser met ``NaN``, ``Infinity`` or a number no double can hold."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _path(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _first_not_finite(doc: Any, where: str = "") -> tuple[str, str] | None:
    if isinstance(doc, _NotFinite):
        return where or "body", doc.text
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        found = _first_not_finite(value, _path(where, key))
        if found:
            return found
    return None


def loads_finite(raw: bytes | str) -> Any:
    """JSON, with ``NaN``, ``Infinity`` and numbers beyond a double (``1e999``) refused.

    Python's parser accepts those literals; here they are ``InvalidInput`` (a 400) naming the
    field. Any other malformed JSON is the parser's ``ValueError``.
    """
    seen: list[str] = []

    def constant(text: str) -> _NotFinite:
        seen.append(text)
        return _NotFinite(text)

    def number(text: str) -> float | _NotFinite:
        v = float(text)
        return v if math.isfinite(v) else constant(text)

    doc = json.loads(raw, parse_constant=constant, parse_float=number)
    if seen:
        where, text = _first_not_finite(doc) or ("body", seen[0])
        raise InvalidInput(f"{where}: {text[:40]} is not a finite number")
    return doc


def is_finite_number(v: Any) -> bool:
    """``v`` is a bool, or a number within ±``MAX_NUMBER``; anything else is not a number."""
    if isinstance(v, bool):
        return True
    try:
        return math.isfinite(float(v)) and abs(v) <= MAX_NUMBER
    except (OverflowError, TypeError, ValueError):
        return False


def check_numbers(rows: list[dict[str, Any]], where: str) -> None:
    """``InvalidInput`` naming the first row field holding a number no model can use."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidInput(f"{where}[{i}]: expected an object")
        for key, value in row.items():
            if isinstance(value, (int, float)) and not is_finite_number(value):
                raise InvalidInput(
                    f"{where}[{i}].{str(key)[:64]}: expected a finite number within ±{MAX_NUMBER:g}"
                )


def _decode(v: Any) -> Any:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else v


@dataclass(frozen=True)
class Tensor:
    """One V2 input or output of a predictor, as its model metadata lists it.

    ``shape`` is per request, -1 for the rows: ``(-1,)`` one value per row, ``(-1, k)`` k per row.
    A BYTES output carries strings as they are and anything else as JSON text.
    """

    name: str
    datatype: str  # FP64, FP32, INT64, BOOL or BYTES
    shape: tuple[int, ...] = (-1,)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


_NUMPY = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_}


def _column(inp: InferInput) -> list[Any]:
    """One V2 input's values per row: scalars, or lists for an input of shape [rows, k, ...]."""
    values = [_decode(v) for v in inp.data]
    if len(inp.shape) < 2:
        return values
    width = math.prod(inp.shape[1:])
    if width <= 0 or len(values) != inp.shape[0] * width:
        raise InvalidInput(
            f"inputs[{inp.name}]: {len(values)} values do not fill shape {inp.shape}"
        )
    return [values[i : i + width] for i in range(0, len(values), width)]


def _output(tensor: Tensor, values: list[Any]) -> InferOutput:
    if tensor.datatype == "BYTES":
        data = [v if isinstance(v, str) else json.dumps(v) for v in values]
        return InferOutput(name=tensor.name, shape=[len(data)], datatype="BYTES", data=data)
    arr = np.asarray(values, dtype=_NUMPY[tensor.datatype])
    if arr.ndim != len(tensor.shape) or any(
        d not in (-1, n) for d, n in zip(tensor.shape, arr.shape, strict=True)
    ):
        raise ValueError(f"output {tensor.name}: shape {list(arr.shape)} is not {tensor.shape}")
    out = InferOutput(name=tensor.name, shape=list(arr.shape), datatype=tensor.datatype)
    out.set_data_from_numpy(arr)
    return out


def rows_from(payload: dict | InferRequest) -> list[dict[str, Any]]:
    """The request's rows, or ``InvalidInput`` (a 400) saying what is wrong with it."""
    if isinstance(payload, InferRequest):
        inputs = payload.inputs
        if len(inputs) == 1 and inputs[0].name == "instances":
            out = []
            for i, raw in enumerate(inputs[0].data):
                where = f"inputs[instances][{i}]"
                try:
                    row = loads_finite(_decode(raw))
                except InvalidInput as err:
                    raise InvalidInput(f"{where}.{err}") from None
                except (TypeError, ValueError) as err:
                    raise InvalidInput(f"{where}: not JSON ({err})") from err
                if not isinstance(row, dict):
                    raise InvalidInput(f"{where}: expected a JSON object")
                out.append(row)
            check_numbers(out, "inputs[instances]")
            return out
        columns = {inp.name: _column(inp) for inp in inputs}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise InvalidInput(f"inputs: columns differ in length {sorted(lengths)}")
        n = lengths.pop()
        rows = [{k: v[i] for k, v in columns.items()} for i in range(n)]
        check_numbers(rows, "inputs")
        return rows
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput('body: expected {"instances": [...]}')
    rows = payload["instances"]
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("instances: expected a non-empty list")
    check_numbers(rows, "instances")
    return rows


def respond(
    payload: dict | InferRequest,
    name: str,
    rows: list[dict[str, Any]],
    declared: tuple[Tensor, ...] | None = None,
):
    """V1 ``{"predictions": rows}`` or a V2 response with one output per field: each of the
    ``declared`` outputs (the model metadata's) encoded as declared, else by its values."""
    if not isinstance(payload, InferRequest):
        return {"predictions": rows}
    if declared is not None:
        return InferResponse(
            model_name=name,
            infer_outputs=[_output(t, [r[t.name] for r in rows]) for t in declared],
            response_id=payload.id or "",
            use_binary_outputs=False,
        )
    outputs = []
    for key in rows[0]:
        values = [r[key] for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            arr = np.asarray(values, dtype=np.float64)
            out = InferOutput(name=key, shape=list(arr.shape), datatype="FP64")
            out.set_data_from_numpy(arr)
        else:
            data = [json.dumps(v) if not isinstance(v, str) else v for v in values]
            out = InferOutput(name=key, shape=[len(data)], datatype="BYTES", data=data)
        outputs.append(out)
    return InferResponse(
        model_name=name,
        infer_outputs=outputs,
        response_id=payload.id or "",
        use_binary_outputs=False,
    )


def v2_request(rows: list[dict[str, Any]], request_id: str = "") -> InferRequest:
    """The V2 form the predictors accept (one JSON row per element): for clients and tests."""
    data = [json.dumps(r) for r in rows]
    inp = InferInput(name="instances", shape=[len(data)], datatype="BYTES", data=data)
    return InferRequest(model_name="", infer_inputs=[inp], request_id=request_id)
