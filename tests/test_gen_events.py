"""Events in the protos → keel gen: name resolution, errors at file:line:column, generated code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.compiler import plugin_pb2
from keel.codegen import pipeline, plugin
from keel.toolchain import image
from keel.toolchain import workspace as ws

from tests.conftest import BIN, GOLDEN, REPO, write_workspace

HEAD = """syntax = "proto3";
package demo.v1;
import "keel/options/v1/options.proto";
message Placed {
  option (keel.options.v1.event) = {};
  string id = 1;
}
message Plain { string id = 1; }
message Outer {
  message Inner {
    option (keel.options.v1.event) = {subject: "demo.v1.outer.inner"};
  }
}
"""
OTHER = """syntax = "proto3";
package other.v1;
import "keel/options/v1/options.proto";
message Foreign {
  option (keel.options.v1.event) = {subject: "other.v1.foreign.thing"};
}
message Placed {
  option (keel.options.v1.event) = {};
}
"""


def _generate(tmp_path: Path, demo: str) -> plugin_pb2.CodeGeneratorResponse:
    files = {"proto/demo/v1/demo.proto": demo, "proto/other/v1/other.proto": OTHER}
    built = image.build(ws.load(write_workspace(tmp_path / "ws", files)))
    request = plugin_pb2.CodeGeneratorRequest(
        file_to_generate=["demo/v1/demo.proto"], proto_file=built.files.file
    )
    return plugin.generate(request)


def _service(options: str) -> str:
    return f"service S {{\n  option (keel.options.v1.service) = {{\n    {options}\n  }};\n}}\n"


def _at(text: str, marker: str) -> str:
    """`demo/v1/demo.proto:line:column` of `marker`'s first occurrence in `text`."""
    before = text[: text.index(marker)]
    return f"demo/v1/demo.proto:{before.count(chr(10)) + 1}:{len(before.rsplit(chr(10))[-1]) + 1}"


@pytest.mark.parametrize(
    ("extra", "marker", "error"),
    [
        (
            _service('publishes: "Nope"'),
            'publishes: "Nope"',
            'demo.v1.S: publishes "Nope": no message of that name in scope demo.v1.S: name a '
            "message declared with option (keel.options.v1.event) = {}",
        ),
        (
            _service('publishes: "Placed"\n    subscribes: "Plain"'),
            'subscribes: "Plain"',
            'subscribes "Plain": demo.v1.Plain (demo/v1/demo.proto:8:1) is not an event: add '
            "`option (keel.options.v1.event) = {};` to it",
        ),
        (
            'message Off {\n  option (keel.options.v1.event) = {subject: "orders.placed"};\n}\n',
            'subject: "orders.placed"',
            'demo.v1.Off: subject "orders.placed" is outside the package demo.v1: start it '
            'with "demo.v1."',
        ),
        (
            'message Wild {\n  option (keel.options.v1.event) = {subject: "demo.v1.Order.*"};\n}\n',
            'subject: "demo.v1.Order.*"',
            'demo.v1.Wild: subject "demo.v1.Order.*": token "Order" is not allowed: use '
            "dot-separated tokens of a-z, 0-9, _ and - (no wildcards * or >, no empty token)",
        ),
        (
            'message Twice {\n  option (keel.options.v1.event) = {subject: "demo.v1.placed"};\n}\n',
            'subject: "demo.v1.placed"',
            'demo.v1.Twice: subject "demo.v1.placed" is also the subject of demo.v1.Placed '
            "(demo/v1/demo.proto:4:1): give one of them another subject",
        ),
        (
            _service('publishes: "Placed"\n    publishes: "other.v1.Foreign"'),
            'publishes: "other.v1.Foreign"',
            'publishes "other.v1.Foreign": other.v1.Foreign is an event of package other.v1; '
            "a service publishes only events of its own package (demo.v1): declare the event "
            "there, or subscribe to it",
        ),
        (
            _service('subscribes: ["Placed", ".demo.v1.Placed"]'),
            "subscribes: [",
            'subscribes ".demo.v1.Placed": demo.v1.Placed is listed twice',
        ),
        (
            _service('subscribes: "Placed"\n    subscribes: "other.v1.Placed"'),
            'subscribes: "other.v1.Placed"',
            'subscribes "other.v1.Placed": its method on_placed() clashes with that of '
            "demo.v1.Placed",
        ),
    ],
    ids=[
        "no-such-message",
        "not-an-event",
        "subject-outside-package",
        "bad-subject-token",
        "two-events-one-subject",
        "publishes-another-package",
        "listed-twice",
        "handler-name-clash",
    ],
)
def test_bad_declarations_fail_naming_file_line_and_column(
    tmp_path: Path, extra: str, marker: str, error: str
) -> None:
    proto = HEAD + extra
    response = _generate(tmp_path, proto)
    assert response.error.startswith(f"{_at(proto, marker)}: "), response.error
    assert error in response.error
    assert list(response.file) == []


def test_a_subject_shared_across_files_of_a_package_fails(tmp_path: Path) -> None:
    more = HEAD.replace("message Placed", "message Again").split("message Plain")[0]
    more = more.replace("{};", '{subject: "demo.v1.placed"};')
    files = {"proto/demo/v1/demo.proto": HEAD, "proto/demo/v1/more.proto": more}
    built = image.build(ws.load(write_workspace(tmp_path / "ws", files)))
    request = plugin_pb2.CodeGeneratorRequest(
        file_to_generate=["demo/v1/demo.proto"], proto_file=built.files.file
    )
    error = plugin.generate(request).error
    assert error.startswith("demo/v1/more.proto:5:37: demo.v1.Again: "), error
    assert "is also the subject of demo.v1.Placed (demo/v1/demo.proto:4:1)" in error


def test_names_resolve_as_protobuf_type_references(tmp_path: Path) -> None:
    """Relative to the service's scope, partly qualified, fully qualified, nested; another
    package's event without importing its file (buf lint forbids an import only an option uses)."""
    options = (
        'publishes: ["Placed", "v1.Outer.Inner"]\n'
        '    subscribes: [".other.v1.Foreign", "demo.v1.Placed"]'
    )
    response = _generate(tmp_path, HEAD + _service(options))
    assert not response.error
    files = {f.name: f.content for f in response.file}
    assert set(files) == {"demo/v1/demo_keel.py", "asyncapi.json"}
    keel_py = files["demo/v1/demo_keel.py"]
    assert "from other.v1 import other_keel, other_pb2" in keel_py
    assert re.findall(r"async def (\w+)\(", keel_py) == [
        "placed",
        "inner",
        "on_foreign",
        "on_placed",
    ]
    assert 'subject="demo.v1.placed"' in keel_py  # the default: package + snake_case name
    assert 'subject="demo.v1.outer.inner"' in keel_py
    assert "spec=other_keel.FOREIGN," in keel_py
    assert "spec=PLACED," in keel_py


def test_a_file_with_events_and_no_service_gets_a_keel_module(tmp_path: Path) -> None:
    response = _generate(tmp_path, HEAD)
    assert not response.error
    content = {f.name: f.content for f in response.file}["demo/v1/demo_keel.py"]
    assert content.startswith("# Code generated by keel gen (protoc-gen-keel). DO NOT EDIT.")
    assert "class " not in content
    assert re.findall(r"^(\w+) = keel\.events\.EventSpec\($", content, re.M) == [
        "PLACED",
        "OUTER__INNER",
    ]


def test_clashing_module_names_are_aliased_and_the_code_is_clean(tmp_path: Path) -> None:
    """`evta.v1.events` publishes, `evtb.v1.events` subscribes: two `events_pb2` modules in one
    generated file. It passes ruff with the repository's settings and imports."""
    publisher = (
        'syntax = "proto3";\npackage evta.v1;\nimport "keel/options/v1/options.proto";\n'
        'message Done {\n  option (keel.options.v1.event) = {subject: "evta.v1.done"};\n}\n'
        'service A {\n  option (keel.options.v1.service) = {publishes: "Done"};\n}\n'
    )
    subscriber = (
        'syntax = "proto3";\npackage evtb.v1;\nimport "keel/options/v1/options.proto";\n'
        "message Ping {}\n"
        "service B {\n"
        '  option (keel.options.v1.service) = {subscribes: "evta.v1.Done"};\n'
        "  rpc Do(Ping) returns (Ping);\n}\n"
    )
    root = write_workspace(
        tmp_path / "ws",
        {"proto/evta/v1/events.proto": publisher, "proto/evtb/v1/events.proto": subscriber},
    )
    out = tmp_path / "out"
    pipeline.run(root, out)
    generated = (out / "evtb/v1/events_keel.py").read_text()
    assert "from evta.v1 import events_keel\n" in generated
    assert "from evta.v1 import events_pb2 as evta_dot_v1_dot_events__pb2\n" in generated
    assert "event: evta_dot_v1_dot_events__pb2.Done," in generated
    for args in (["check"], ["format", "--check"]):
        ruff = [str(BIN / "ruff"), *args, "--no-cache", "--config", str(REPO / "pyproject.toml")]
        targets = [str(path) for path in sorted(out.rglob("*_keel.py"))]
        result = subprocess.run([*ruff, *targets], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    script = "from evtb.v1 import events_keel as m; print(m.BSubscriber.__keel_subscriber__)"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(out)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "subject='evta.v1.done'" in result.stdout


@pytest.fixture
def kitchen(golden_out: Path) -> Any:
    from kitchen.v1 import kitchen_keel  # noqa: PLC0415 (on sys.path through golden_out)

    return kitchen_keel


def test_subscriber_base_declares_its_handlers_and_they_are_abstract(kitchen: Any) -> None:
    import keel.events  # noqa: PLC0415
    from kitchen.pantry.v1 import pantry_keel  # noqa: PLC0415

    base = kitchen.PantryServiceSubscriber
    assert issubclass(base, keel.events.Subscriber)
    spec = base.__keel_subscriber__
    assert spec.service == "kitchen.v1.PantryService"
    assert [(h.spec, h.method) for h in spec.handlers] == [
        (kitchen.DISH_COOKED, "on_dish_cooked"),
        (pantry_keel.MONEY_SPENT, "on_money_spent"),
    ]
    expected = keel.events.EventSpec(
        subject="kitchen.v1.dish.cooked-and_served",
        message=kitchen.kitchen_pb2.DishCooked,
        stream="KITCHEN_V1",
        name="kitchen.v1.DishCooked",
    )
    assert expected == kitchen.DISH_COOKED

    class Partial(base):  # type: ignore[misc,valid-type]
        async def on_dish_cooked(self, event: Any, context: Any) -> None:
            pass

    with pytest.raises(TypeError, match=r"abstract method.*on_money_spent"):
        Partial()

    class Pantry(Partial):
        async def on_money_spent(self, event: Any, context: Any) -> None:
            pass

    pantry = Pantry()
    assert pantry.handler_for(spec.handlers[1]) == pantry.on_money_spent


async def test_generated_publisher_writes_the_event_to_the_outbox(
    kitchen: Any, tmp_path: Path
) -> None:
    import keel.events  # noqa: PLC0415
    from sqlalchemy import select  # noqa: PLC0415
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine  # noqa: PLC0415

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(keel.events.tables.metadata.create_all)
        cooked = kitchen.kitchen_pb2.DishCooked(dish=kitchen.kitchen_pb2.Dish(name="soup"))
        async with AsyncSession(engine) as session, session.begin():
            publisher = kitchen.KitchenServicePublisher(session)
            first = await publisher.dish_cooked(cooked)
            second = await publisher.burnt(kitchen.kitchen_pb2.Dish.Burnt(name="toast"))
        outbox = keel.events.tables.outbox
        async with AsyncSession(engine) as session:
            rows = (await session.execute(select(outbox).order_by(outbox.c.id))).all()
    finally:
        await engine.dispose()
    assert [(r.id, r.subject, r.stream, r.name) for r in rows] == [
        (first, "kitchen.v1.dish.cooked-and_served", "KITCHEN_V1", "kitchen.v1.DishCooked"),
        (second, "kitchen.v1.dish.burnt", "KITCHEN_V1", "kitchen.v1.Dish.Burnt"),
    ]
    assert kitchen.kitchen_pb2.DishCooked.FromString(rows[0].payload) == cooked


def test_generated_event_code_type_checks(tmp_path: Path) -> None:
    """mypy --strict: a typical use is clean; misuse fails where events_bad.expected says."""
    typecheck = REPO / "tests" / "typecheck"
    result = subprocess.run(
        [
            str(BIN / "mypy"),
            "--strict",
            "--explicit-package-bases",
            "--no-error-summary",
            "--hide-error-context",
            "--config-file",
            str(typecheck / "mypy.ini"),
            "--cache-dir",
            str(tmp_path),
            str(typecheck / "events_good.py"),
            str(typecheck / "events_bad.py"),
        ],
        cwd=GOLDEN / "out",
        env={"MYPYPATH": str(GOLDEN / "out"), "PATH": str(BIN)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    found = {
        (m[1], int(m[2]), m[3])
        for m in re.finditer(r"(events_\w+)\.py:(\d+): error: .*\[([\w-]+)\]$", result.stdout, re.M)
    }
    expected = {
        ("events_bad", int(line.split()[0]), line.split()[1])
        for line in (typecheck / "events_bad.expected").read_text().splitlines()
        if line.strip()
    }
    assert found == expected, result.stdout + result.stderr
