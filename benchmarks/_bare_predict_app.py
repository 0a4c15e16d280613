"""Baseline (b) of the serving benchmark: bare uvicorn + FastAPI serving the same registered
version with the same runner, no Ray, no auth. The version spec comes in MLAAS_BENCH_SPEC."""

import json
import os

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from serve_apps.inference.runners import load_runner, shape_outputs

_SPEC = json.loads(os.environ["MLAAS_BENCH_SPEC"])
_RUNNER = load_runner(_SPEC)
app = FastAPI()


class PredictRequest(BaseModel):
    model: str
    inputs: list[list[float]]


@app.post("/v1/predict")
def predict(body: PredictRequest) -> dict:
    outputs = _RUNNER.predict(np.asarray(body.inputs, dtype=np.float32))
    return {"model": body.model, **shape_outputs(outputs, _SPEC["output_schema"])}
