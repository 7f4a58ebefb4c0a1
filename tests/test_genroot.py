"""Generated code imports whatever its package names (keel.genroot), the way a user meets it:
`keel gen` on a workspace, then `keel gateway`, a gRPC server and plain `python` on the output.

protoc writes no `__init__.py`, so a generated `test/` folder loses against the standard
library's package `test`, `email/` against `email`, `grpc/` against grpcio... unless merged.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keel import genroot

from tests.conftest import BIN, free_port, keel, write_workspace

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}

# In the shape of envoy's test/proto/bookstore.proto: package `bookstore`, file under test/proto/.
BOOKSTORE = """\
syntax = "proto3";

package bookstore;

import "google/api/annotations.proto";
import "google/api/httpbody.proto";
import "google/protobuf/empty.proto";

// Shelves of books.
service Bookstore {
  rpc ListShelves(google.protobuf.Empty) returns (ListShelvesResponse) {
    option (google.api.http) = {get: "/shelves"};
  }
  rpc CreateShelf(CreateShelfRequest) returns (Shelf) {
    option (google.api.http) = {
      post: "/shelf"
      body: "shelf"
    };
  }
  rpc GetShelf(GetShelfRequest) returns (Shelf) {
    option (google.api.http) = {get: "/shelves/{shelf}"};
  }
  rpc ListBooks(ListBooksRequest) returns (stream Book) {
    option (google.api.http) = {get: "/shelves/{shelf}/books"};
  }
  rpc GetBook(GetBookRequest) returns (Book) {}
  rpc DeleteBook(DeleteBookRequest) returns (google.protobuf.Empty) {
    option (google.api.http) = {delete: "/shelves/{shelf}/books/{book}"};
  }
  rpc UpdateBook(UpdateBookRequest) returns (Book) {
    option (google.api.http) = {
      patch: "/shelves/{shelf}/books/{book.id}"
      body: "book"
    };
  }
  rpc ShelfOptions(GetShelfRequest) returns (google.protobuf.Empty) {
    option (google.api.http) = {
      custom: {kind: "OPTIONS" path: "/shelves/{shelf}"}
    };
  }
  rpc GetAuthor(GetAuthorRequest) returns (Author) {
    option (google.api.http) = {get: "/authors/{author}"};
  }
  rpc GetIndex(google.protobuf.Empty) returns (google.api.HttpBody) {
    option (google.api.http) = {get: "/index"};
  }
}

message Shelf {
  int64 id = 1;
  string theme = 2;
}

message Book {
  int64 id = 1;
  string author = 2;
  string title = 3;
  repeated string quotes = 4;
}

message Author {
  int64 id = 1;
  enum Gender {
    UNKNOWN = 0;
    MALE = 1;
    FEMALE = 2;
  }
  Gender gender = 2;
  string first_name = 3;
  string last_name = 4 [json_name = "lname"];
}

message ListShelvesResponse {
  repeated Shelf shelves = 1;
}

message CreateShelfRequest {
  Shelf shelf = 1;
}

message GetShelfRequest {
  int64 shelf = 1;
}

message ListBooksRequest {
  int64 shelf = 1;
}

message GetBookRequest {
  int64 shelf = 1;
  int64 book = 2;
}

message DeleteBookRequest {
  int64 shelf = 1;
  int64 book = 2;
}

message UpdateBookRequest {
  int64 shelf = 1;
  Book book = 2;
}

message GetAuthorRequest {
  int64 author = 1;
}
"""

# A plain grpc.aio server on the generated *_pb2_grpc module. Its first argument is a folder
# holding the .pth file `python -m keel_genroot OUT` prints (what the Makefile installs into the
# venv): site.addsitedir reads it the way start-up reads site-packages.
BACKEND = """\
import asyncio
import site
import sys

site.addsitedir(sys.argv[1])

import grpc
from test.proto import bookstore_pb2, bookstore_pb2_grpc


class Bookstore(bookstore_pb2_grpc.BookstoreServicer):
    async def GetShelf(self, request, context):
        return bookstore_pb2.Shelf(id=request.shelf, theme=f"theme of shelf {request.shelf}")

    async def CreateShelf(self, request, context):
        return request.shelf


async def main():
    server = grpc.aio.server()
    bookstore_pb2_grpc.add_BookstoreServicer_to_server(Bookstore(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


asyncio.run(main())
"""


def _generate(tmp_path: Path, files: dict[str, str]) -> Path:
    workspace = write_workspace(tmp_path / "ws", files, modules=(".",))
    out = tmp_path / "out"
    result = keel("gen", "--workspace", workspace, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def _pth_folder(tmp_path: Path, out: Path) -> Path:
    """A folder with the .pth file the Makefile writes (keel-gen.pth) for `out`."""
    folder = tmp_path / "site"
    folder.mkdir()
    lines = subprocess.run(
        [sys.executable, "-m", "keel_genroot", str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    (folder / "keel-gen.pth").write_text(lines)
    return folder


class _Lines:
    """A child's stdout, line by line, read by a thread (waits never block the test forever)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._queue: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put("")

    def wait_for(self, part: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line, f"exited ({self.process.wait()}) before printing {part!r}"
            if part in line:
                return line.strip()


@contextmanager
def _running(command: list[str]) -> Iterator[_Lines]:
    process = subprocess.Popen(command, env=_ENV, stdout=subprocess.PIPE, text=True)
    lines = _Lines(process)
    try:
        yield lines
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        lines.reader.join(timeout=30)  # it stops at the end of the output
        assert process.stdout is not None
        process.stdout.close()


def _wait_for_port(port: int, lines: _Lines, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except ConnectionRefusedError:
            assert lines.process.poll() is None, "the gateway exited"
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.02)  # polling interval, not a wait for readiness


def _request(url: str, body: object | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)
    with _DIRECT.open(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def test_envoy_bookstore_under_test_proto_generates_and_serves_through_the_gateway(
    tmp_path: Path,
) -> None:
    out = _generate(tmp_path, {"test/proto/bookstore.proto": BOOKSTORE})
    assert (out / "test/proto/bookstore_pb2_grpc.py").is_file()
    assert not (out / "test/__init__.py").exists()  # a namespace folder, as protoc writes it
    backend_script = tmp_path / "backend.py"
    backend_script.write_text(BACKEND)
    site_folder = _pth_folder(tmp_path, out)

    with _running([sys.executable, str(backend_script), str(site_folder)]) as backend:
        backend_port = int(backend.wait_for(""))
        port = free_port()
        command = [str(BIN / "keel"), "gateway", "--gen", str(out), "--port", str(port)]
        with _running([*command, "--default-target", f"127.0.0.1:{backend_port}"]) as gateway:
            announced = json.loads(gateway.wait_for('"event":"serving"'))
            assert (announced["routes"], announced["url"]) == (9, f"http://127.0.0.1:{port}")
            _wait_for_port(port, gateway)
            url = f"http://127.0.0.1:{port}"
            assert _request(f"{url}/shelves/7") == (200, {"id": "7", "theme": "theme of shelf 7"})
            created = _request(f"{url}/shelf", {"id": "3", "theme": "poetry"})
            assert created == (200, {"id": "3", "theme": "poetry"})


def test_plain_python_imports_the_output_through_the_pth_file(tmp_path: Path) -> None:
    out = _generate(tmp_path, {"test/proto/bookstore.proto": BOOKSTORE})
    site_folder = _pth_folder(tmp_path, out)
    script = (
        "import site, sys; site.addsitedir(sys.argv[1]);"
        "from test.proto import bookstore_pb2; import test.support;"
        "print(bookstore_pb2.__file__, test.support.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(site_folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    generated, support = result.stdout.split()
    assert Path(generated) == out / "test/proto/bookstore_pb2.py"
    assert not Path(support).is_relative_to(out)  # the standard library's test.support still


def _proto(package: str, message: str) -> str:
    """A file with one message and a service (so a `*_keel.py` too) using it."""
    return (
        f'syntax = "proto3";\n\npackage {package};\n\n'
        f"message {message} {{\n  string text = 1;\n}}\n\n"
        f"service {message}Service {{\n  rpc Echo({message}) returns ({message});\n}}\n"
    )


# Folders named as packages of the standard library or of installed distributions.
_SHARED_NAMES = {
    "email/v1/mail.proto": _proto("email.v1", "Mail"),
    "json/v1/doc.proto": _proto("json.v1", "Doc"),
    "http/v1/page.proto": _proto("http.v1", "Page"),
    "logging/v1/entry.proto": _proto("logging.v1", "Entry"),
    "grpc/demo/v1/demo.proto": _proto("grpc.demo.v1", "Demo"),
    "google/demo/v1/demo.proto": _proto("google.demo.v1", "Demo"),
    "google/type/extra.proto": _proto("google.type", "Extra"),
    "google/api/extra.proto": _proto("google.api.extra", "Extra"),
}

_IMPORT_SHARED = """\
import json, email  # imported before the generated root is installed
import site, sys

site.addsitedir(sys.argv[1])

from email.v1 import mail_pb2
from json.v1 import doc_pb2
from http.v1 import page_pb2
from logging.v1 import entry_pb2
from grpc.demo.v1 import demo_pb2 as grpc_demo_pb2
from google.demo.v1 import demo_pb2 as google_demo_pb2
from google.type import extra_pb2 as type_extra_pb2
from google.api import extra_pb2 as api_extra_pb2
generated = [mail_pb2, doc_pb2, page_pb2, entry_pb2, grpc_demo_pb2, google_demo_pb2,
             type_extra_pb2, api_extra_pb2]

# What they share names with is still whole.
import email.message, http.client, logging.handlers, grpc.aio
from google.protobuf import empty_pb2, json_format
from google.type import date_pb2
from google.api import annotations_pb2
untouched = [email.message, http.client, logging.handlers, grpc.aio, empty_pb2, date_pb2,
             annotations_pb2]

print(json.dumps({
    "generated": [m.__file__ for m in generated],
    "untouched": [m.__file__ for m in untouched],
    "doc": json_format.MessageToDict(doc_pb2.Doc(text="x")),
}))
"""


def test_folders_named_as_existing_packages_merge_into_them(tmp_path: Path) -> None:
    out = _generate(tmp_path, _SHARED_NAMES)
    site_folder = _pth_folder(tmp_path, out)
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_SHARED, str(site_folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert [Path(f).relative_to(out).as_posix() for f in found["generated"]] == [
        name.replace(".proto", "_pb2.py") for name in _SHARED_NAMES
    ]
    assert not any(Path(f).is_relative_to(out) for f in found["untouched"])
    assert found["doc"] == {"text": "x"}


def test_a_folder_named_as_a_module_is_refused_by_gen_and_gateway(tmp_path: Path) -> None:
    workspace = write_workspace(
        tmp_path / "ws",
        {
            "types/v1/money.proto": _proto("types.v1", "Money"),
            "shop/v1/shop.proto": _proto("shop.v1", "Shop"),
        },
        modules=(".",),
    )
    out = tmp_path / "out"
    fix = "Move the file out of the folder `types/` (e.g. to acme/types/v1/money.proto)"
    for _ in range(2):  # a rerun on unchanged inputs says the same
        result = keel("gen", "--workspace", workspace, "--out", out)
        assert result.returncode == 1
        assert result.stderr.startswith("keel gen: types/v1/money.proto: ")
        assert fix in result.stderr
        assert "`types` is a module of the standard library" in result.stderr
        assert len(result.stderr.splitlines()) == 1  # one line per proto file, not per output

    gateway = subprocess.run(
        [str(BIN / "keel"), "gateway", "--gen", str(out), "--port", str(free_port())],
        env=_ENV,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert gateway.returncode == 2
    assert gateway.stderr.startswith("keel gateway: types/v1/money.proto: ")
    assert fix in gateway.stderr
    assert len(gateway.stderr.splitlines()) == 1  # no traceback


def test_unimportable_names_only_folders_named_as_modules(tmp_path: Path) -> None:
    files = [
        "test/proto/bookstore_pb2.py",  # stdlib package: merged
        "email/mime/v1/mail_pb2.py",  # a subpackage of a stdlib package: merged
        "google/protobuf/extra_pb2.py",  # protobuf's own package: merged
        "acme/v1/shop_keel.py",  # nobody else's
        "top_pb2.py",  # at the top of the root
        "json/decoder/v1/doc_pb2.pyi",  # json.decoder is a module
        "sys/v1/a_pb2_grpc.py",  # built in
    ]
    blocked = genroot.unimportable(tmp_path, files)
    assert [(b.file, b.module, b.proto) for b in blocked] == [
        ("json/decoder/v1/doc_pb2.pyi", "json.decoder", "json/decoder/v1/doc.proto"),
        ("sys/v1/a_pb2_grpc.py", "sys", "sys/v1/a.proto"),
    ]
    assert blocked[0].origin.endswith("json/decoder.py")
    assert blocked[1].origin == "built in"
    assert str(blocked[1]).startswith(
        "sys/v1/a.proto: Python cannot import its module sys.v1.a_pb2_grpc: "
        "`sys` is a module of the standard library (built in), not a package."
    )
