"""Baseline (b) of the gateway benchmark: a bare uvicorn + FastAPI app, no Ray, no auth."""

from fastapi import FastAPI

app = FastAPI()
_BODY = {"tenant_id": "ten_bench", "tier": "enterprise", "period": "2026-11", "endpoints": []}


@app.get("/v1/usage")
async def usage() -> dict:
    return _BODY
