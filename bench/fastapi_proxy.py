"""The baseline for bench/gateway_bench.py: a hand-written FastAPI proxy to the echo service.

`python bench/fastapi_proxy.py PORT UPSTREAM GEN_DIR` serves GET /v1/echo/{text} and
POST /v1/echo the way a team writes them by hand: a pydantic body, a grpcio stub call with a
deadline and `MessageToDict` for the answer, on uvicorn with uvloop and httptools, one worker.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

sys.path.insert(0, sys.argv[3])

import grpc.aio
import uvicorn
from echo.v1 import echo_pb2, echo_pb2_grpc
from fastapi import FastAPI
from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel

UPSTREAM = sys.argv[2]
stubs: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with grpc.aio.insecure_channel(UPSTREAM) as channel:
        stubs["echo"] = echo_pb2_grpc.EchoServiceStub(channel)
        yield


app = FastAPI(lifespan=lifespan)


class EchoBody(BaseModel):
    text: str = ""


@app.get("/v1/echo/{text}")
async def echo_get(text: str) -> dict[str, Any]:
    reply = await stubs["echo"].Echo(echo_pb2.EchoRequest(text=text), timeout=10)
    return MessageToDict(reply)


@app.post("/v1/echo")
async def echo_post(body: EchoBody) -> dict[str, Any]:
    reply = await stubs["echo"].Echo(echo_pb2.EchoRequest(text=body.text), timeout=10)
    return MessageToDict(reply)


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
