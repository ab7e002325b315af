"""Rows in, rows out, for both KServe protocols.

Every predictor works on a list of row dicts. V1 carries them as ``{"instances": [...]}`` and
answers ``{"predictions": [...]}``. V2 (Open Inference Protocol) carries either one BYTES input
named ``instances`` holding a JSON document per row, or one input per column; it answers one
output per field (FP64 for numbers, BYTES with JSON for anything else).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse


def _decode(v: Any) -> Any:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else v


def rows_from(payload: dict | InferRequest) -> list[dict[str, Any]]:
    """The request's rows, or ``InvalidInput`` (a 400) saying what is wrong with it."""
    if isinstance(payload, InferRequest):
        inputs = payload.inputs
        if len(inputs) == 1 and inputs[0].name == "instances":
            out = []
            for i, raw in enumerate(inputs[0].data):
                try:
                    row = json.loads(_decode(raw))
                except (TypeError, ValueError) as err:
                    raise InvalidInput(f"inputs[instances][{i}]: not JSON ({err})") from err
                if not isinstance(row, dict):
                    raise InvalidInput(f"inputs[instances][{i}]: expected a JSON object")
                out.append(row)
            return out
        columns = {inp.name: [_decode(v) for v in inp.data] for inp in inputs}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise InvalidInput(f"inputs: columns differ in length {sorted(lengths)}")
        n = lengths.pop()
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput('body: expected {"instances": [...]}')
    rows = payload["instances"]
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("instances: expected a non-empty list")
    return rows


def respond(payload: dict | InferRequest, name: str, rows: list[dict[str, Any]]):
    """V1 ``{"predictions": rows}`` or a V2 response with one output per field."""
    if not isinstance(payload, InferRequest):
        return {"predictions": rows}
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
