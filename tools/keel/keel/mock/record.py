"""Record mode: the mock forwards every call to a real server and writes what it answered as
stubs (`--stubs-out`); serving that file (`--stubs`) replays them. A request answered
differently on later calls becomes a sequence."""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import json_format
from google.protobuf.message import Message

from keel.errors import from_rpc_error
from keel.mock.server import MockServer
from keel.runtime.spec import MethodSpec

_SKIPPED = ("grpc-", ":", "user-agent", "content-type", "te")


class Recorder:
    """Forwards a MockServer's calls to `target` (HOST:PORT) and writes stubs to `out`."""

    def __init__(self, target: str, out: Path) -> None:
        self.target = target
        self.out = out
        self.stubs: list[dict[str, Any]] = []
        self._channel: grpc.aio.Channel | None = None

    def attach(self, mock: MockServer) -> None:
        mock.state.forward = self.forward

    async def forward(
        self,
        spec: MethodSpec[Any, Any],
        requests: Sequence[Message],
        metadata: Sequence[tuple[str, str | bytes]],
    ) -> list[Message]:
        """The real server's answer to this call (its error raised as a KeelError)."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        sent = tuple((k, v) for k, v in metadata if not k.startswith(_SKIPPED))
        path = f"/{spec.service}/{spec.name}"
        serialize, parse = spec.request_type.SerializeToString, spec.response_type.FromString
        channel = self._channel
        try:
            if spec.kind.client_streaming:
                stream_call = channel.stream_stream if spec.kind.server_streaming else None
                if stream_call is not None:
                    call = stream_call(path, serialize, parse)(iter(requests), metadata=sent)
                    answers = [each async for each in call]
                else:
                    one = channel.stream_unary(path, serialize, parse)
                    answers = [await one(iter(requests), metadata=sent)]
            elif spec.kind.server_streaming:
                streamed = channel.unary_stream(path, serialize, parse)(requests[0], metadata=sent)
                answers = [each async for each in streamed]
            else:
                answers = [
                    await channel.unary_unary(path, serialize, parse)(requests[0], metadata=sent)
                ]
        except grpc.aio.AioRpcError as error:
            failure = from_rpc_error(error)
            self._add(spec, requests, {"error": _error_json(failure.to_status())})
            raise failure from None
        shown = [_json(a) for a in answers]
        if spec.kind.server_streaming:
            self._add(spec, requests, {"stream": shown})
        else:
            self._add(spec, requests, {"respond": shown[0]})
        return answers

    def _add(
        self, spec: MethodSpec[Any, Any], requests: Sequence[Message], answer: dict[str, Any]
    ) -> None:
        if spec.kind.client_streaming:
            equals = {str(i): _json(r) for i, r in enumerate(requests)}
        else:
            equals = _json(requests[0])
        method = f"{spec.service}/{spec.name}"
        match = {"equals": equals} if equals else {}
        for stub in self.stubs:
            if stub["method"] == method and stub.get("match", {}) == match:
                stub["sequence"].append(answer)
                break
        else:
            self.stubs.append({"method": method, "match": match, "sequence": [answer]})
        self.write()

    def write(self) -> None:
        """Write the stubs recorded so far (a one-answer sequence as a plain answer)."""
        shown = []
        for stub in self.stubs:
            answers = stub["sequence"]
            plain = {k: v for k, v in stub.items() if k != "sequence" and v}
            shown.append(plain | answers[0] if len(answers) == 1 else plain | {"sequence": answers})
        document = {"stubs": shown}
        if self.out.suffix in {".yaml", ".yml"}:
            yaml = importlib.import_module("yaml")
            text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        else:
            text = json.dumps(document, indent=2) + "\n"
        self.out.write_text(text)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _error_json(status: Any) -> dict[str, Any]:
    name = next((c.name for c in grpc.StatusCode if c.value[0] == status.code), "UNKNOWN")
    found: dict[str, Any] = {"code": name, "message": status.message}
    if status.details:
        # (through JSON: an Any's fields come back as an OrderedDict, which YAML cannot write)
        found["details"] = json.loads(
            json.dumps([json_format.MessageToDict(d) for d in status.details])
        )
    return found
