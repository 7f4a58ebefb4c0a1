"""`keel gen` on rules with `**` before further segments, copied from googleapis.

The protos are cut down (a few fields each, Keel's own package names so that the generated
modules do not shadow the installed `google` packages) but every `google.api.http` rule is
googleapis' own, character for character.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.conftest import keel, write_workspace

HEAD = 'syntax = "proto3";\npackage {package};\nimport "google/api/annotations.proto";\n'

SHARED = """syntax = "proto3";
package deep.shared.v1;
// A document, shared by the services below.
message Document {
  // Its resource name.
  string name = 1;
  map<string, string> fields = 2;
}
"""

FIRESTORE = (
    HEAD.format(package="deep.firestore.v1")
    + """import "deep/shared/v1/shared.proto";
message GetDocumentRequest { string name = 1; }
message ListDocumentsRequest { string parent = 1; string collection_id = 2; int32 page_size = 3; }
message ListDocumentsResponse { repeated deep.shared.v1.Document documents = 1; }
message CreateDocumentRequest {
  string parent = 1;
  string collection_id = 2;
  deep.shared.v1.Document document = 4;
}
service Firestore {
  rpc GetDocument(GetDocumentRequest) returns (deep.shared.v1.Document) {
    option (google.api.http) = {
      get: "/v1/{name=projects/*/databases/*/documents/*/**}"
    };
  }
  rpc ListDocuments(ListDocumentsRequest) returns (ListDocumentsResponse) {
    option (google.api.http) = {
      get: "/v1/{parent=projects/*/databases/*/documents/*/**}/{collection_id}"
      additional_bindings {
        get: "/v1/{parent=projects/*/databases/*/documents}/{collection_id}"
      }
    };
  }
  rpc CreateDocument(CreateDocumentRequest) returns (deep.shared.v1.Document) {
    option (google.api.http) = {
      post: "/v1/{parent=projects/*/databases/*/documents/**}/{collection_id}"
      body: "document"
    };
  }
}
"""
)

DISCOVERY = (
    HEAD.format(package="deep.discoveryengine.v1")
    + """message PurgeSuggestionDenyListEntriesRequest { string parent = 1; }
message PurgeSuggestionDenyListEntriesResponse { int64 purge_count = 1; }
service CompletionService {
  rpc PurgeSuggestionDenyListEntries(PurgeSuggestionDenyListEntriesRequest)
      returns (PurgeSuggestionDenyListEntriesResponse) {
    option (google.api.http) = {
      post: "/v1/{parent=projects/*/locations/*/collections/*/dataStores/*}/suggestionDenyListEntries:purge"
      body: "*"
      additional_bindings {
        post: "/v1/{parent=projects/*/locations/*/dataStores/**}/suggestionDenyListEntries:purge"
        body: "*"
      }
    };
  }
}
"""  # noqa: E501 (the rule as googleapis writes it)
)

BOTS = (
    HEAD.format(package="deep.remoteworkers.v1test2")
    + """message BotSession { string name = 1; string bot_id = 2; }
message CreateBotSessionRequest { string parent = 1; BotSession bot_session = 2; }
message UpdateBotSessionRequest { string name = 1; BotSession bot_session = 2; }
service Bots {
  rpc CreateBotSession(CreateBotSessionRequest) returns (BotSession) {
    option (google.api.http) = {
      post: "/v1test2/{parent=**}/botSessions"
      body: "bot_session"
    };
  }
  rpc UpdateBotSession(UpdateBotSessionRequest) returns (BotSession) {
    option (google.api.http) = {
      patch: "/v1test2/{name=**/botSessions/*}"
      body: "bot_session"
    };
  }
}
"""
)

KMS_INVENTORY = (
    HEAD.format(package="deep.kms.inventory.v1")
    + """message GetProtectedResourcesSummaryRequest { string name = 1; }
message ProtectedResourcesSummary { string name = 1; int64 resource_count = 2; }
service KeyTrackingService {
  rpc GetProtectedResourcesSummary(GetProtectedResourcesSummaryRequest)
      returns (ProtectedResourcesSummary) {
    option (google.api.http) = {
      get: "/v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/**}/protectedResourcesSummary"
    };
  }
}
"""
)

SCHEMA_REGISTRY = (
    HEAD.format(package="deep.managedkafka.schemaregistry.v1")
    + """import "google/api/httpbody.proto";
message GetSchemaRequest { string name = 1; string subject = 2; }
message ListSchemaVersionsRequest { string parent = 1; string subject = 2; bool deleted = 3; }
service ManagedSchemaRegistry {
  rpc GetRawSchema(GetSchemaRequest) returns (google.api.HttpBody) {
    option (google.api.http) = {
      get: "/v1/{name=projects/*/locations/*/schemaRegistries/*/schemas/**}/schema"
      additional_bindings {
        get: "/v1/{name=projects/*/locations/*/schemaRegistries/*/contexts/*/schemas/**}/schema"
      }
    };
  }
  rpc ListSchemaVersions(ListSchemaVersionsRequest) returns (google.api.HttpBody) {
    option (google.api.http) = {
      get: "/v1/{parent=projects/*/locations/*/schemaRegistries/*/schemas/**}/versions"
      additional_bindings {
        get: "/v1/{parent=projects/*/locations/*/schemaRegistries/*/contexts/*/schemas/**}/versions"
      }
    };
  }
}
"""
)

RETAIL = (
    HEAD.format(package="deep.retail.v2")
    + """message Inventory { string name = 1; int32 quantity = 2; }
message SetInventoryRequest { Inventory inventory = 1; bool allow_missing = 2; }
message SetInventoryResponse {}
service ProductService {
  rpc SetInventory(SetInventoryRequest) returns (SetInventoryResponse) {
    option (google.api.http) = {
      post: "/v2/{inventory.name=projects/*/locations/*/catalogs/*/branches/*/products/**}:setInventory"
      body: "*"
    };
  }
}
"""  # noqa: E501 (the rule as googleapis writes it)
)

PROTOS = {
    "proto/deep/shared/v1/shared.proto": SHARED,
    "proto/deep/firestore/v1/firestore.proto": FIRESTORE,
    "proto/deep/discoveryengine/v1/completion_service.proto": DISCOVERY,
    "proto/deep/remoteworkers/v1test2/bots.proto": BOTS,
    "proto/deep/kms/inventory/v1/key_tracking_service.proto": KMS_INVENTORY,
    "proto/deep/managedkafka/schemaregistry/v1/schema_registry.proto": SCHEMA_REGISTRY,
    "proto/deep/retail/v2/product_service.proto": RETAIL,  # google/cloud/retail/v2
}
DOCUMENTED = [name.removeprefix("proto/").removesuffix(".proto") for name in PROTOS][1:]

# Matched in a child process against the generated ServiceSpecs (their HttpRules).
PROBE = """
import importlib, json, sys
from keel.httprule import compile_template
found = {}
for module, probes in json.loads(sys.argv[1]).items():
    specs = [v for v in vars(importlib.import_module(module)).values() if hasattr(v, "methods")]
    rules = [(m.name, r) for s in specs for m in s.methods for r in m.http]
    for verb, path in probes:
        hits = [
            (name, variables)
            for name, rule in rules
            if rule.method == verb
            for variables in [compile_template(rule.path).match(path)]
            if variables is not None
        ]
        found[f"{verb} {path}"] = hits
print(json.dumps(found))
"""

DB = "projects/p1/databases/(default)/documents"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deep")
    workspace = write_workspace(root / "ws", PROTOS)
    out = root / "out"
    result = keel("gen", "--workspace", workspace, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def _document(out: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "openapi" / f"{name}.json").read_text())
    return data


def test_generation_succeeds_for_every_file(generated: Path) -> None:
    for name in DOCUMENTED:
        assert (generated / f"{name}_keel.py").is_file(), name
        assert (generated / f"{name}_pb2.py").is_file(), name
        document = _document(generated, name)
        validate(document)  # openapi-spec-validator: a valid OpenAPI 3.1 document
    source = (generated / "deep/remoteworkers/v1test2/bots_keel.py").read_text()
    assert 'path="/v1test2/{name=**/botSessions/*}"' in source


@pytest.mark.parametrize(
    ("name", "path", "verb", "deep"),
    [
        (
            "deep/firestore/v1/firestore",
            "/v1/projects/{project}/databases/{database}/documents/{document}/{parent}"
            "/{collection_id}",
            "get",
            "parent",
        ),
        (
            "deep/firestore/v1/firestore",
            "/v1/projects/{project}/databases/{database}/documents/{parent}/{collection_id}",
            "post",
            "parent",
        ),
        (
            "deep/discoveryengine/v1/completion_service",
            "/v1/projects/{project}/locations/{location}/dataStores/{parent}"
            "/suggestionDenyListEntries:purge",
            "post",
            "parent",
        ),
        (
            "deep/remoteworkers/v1test2/bots",
            "/v1test2/{name}/botSessions/{botSession}",
            "patch",
            "name",
        ),
        ("deep/remoteworkers/v1test2/bots", "/v1test2/{parent}/botSessions", "post", "parent"),
        (
            "deep/kms/inventory/v1/key_tracking_service",
            "/v1/projects/{project}/locations/{location}/keyRings/{keyRing}/cryptoKeys/{name}"
            "/protectedResourcesSummary",
            "get",
            "name",
        ),
        (
            "deep/managedkafka/schemaregistry/v1/schema_registry",
            "/v1/projects/{project}/locations/{location}/schemaRegistries/{schemaRegistry}"
            "/contexts/{context}/schemas/{parent}/versions",
            "get",
            "parent",
        ),
        (  # a dotted field documents under its last name, as `{book.name}` does
            "deep/retail/v2/product_service",
            "/v2/projects/{project}/locations/{location}/catalogs/{catalog}/branches/{branch}"
            "/products/{name}:setInventory",
            "post",
            "name",
        ),
    ],
)
def test_openapi_documents_a_deep_wildcard_as_one_parameter_holding_slashes(
    generated: Path, name: str, path: str, verb: str, deep: str
) -> None:
    operation = _document(generated, name)["paths"][path][verb]
    parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "path"}
    assert set(parameters) == set(re.findall(r"\{(\w+)\}", path))
    description = parameters[deep]["description"]
    assert "zero or more path segments" in description
    assert "slashes kept" in description
    assert f"`/{{{deep}}}` is left out" in description
    others = [p for n, p in parameters.items() if n != deep]
    assert all("zero or more" not in p["description"] for p in others)


def test_generated_rules_route_real_paths(generated: Path) -> None:
    probes = {
        "deep.firestore.v1.firestore_keel": [
            ["GET", f"/v1/{DB}/rooms/r1/messages"],
            ["GET", f"/v1/{DB}/rooms"],
            ["POST", f"/v1/{DB}/rooms"],
        ],
        "deep.discoveryengine.v1.completion_service_keel": [
            ["POST", "/v1/projects/p/locations/l/dataStores/ds/suggestionDenyListEntries:purge"],
            ["POST", "/v1/projects/p/locations/l/dataStores/suggestionDenyListEntries:purge"],
            ["POST", "/v1/projects/p/locations/l/dataStores/ds/suggestionDenyListEntries"],
        ],
        "deep.remoteworkers.v1test2.bots_keel": [
            ["PATCH", "/v1test2/farms/f1/botSessions/b1"],
            ["PATCH", "/v1test2/botSessions/b1"],
            ["POST", "/v1test2/botSessions"],
        ],
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(probes)],
        cwd=generated,
        env={"PYTHONPATH": str(generated)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    expected = {
        f"GET /v1/{DB}/rooms/r1/messages": [
            # GetDocument reads it as a document name, ListDocuments as parent + collection.
            ["GetDocument", {"name": f"{DB}/rooms/r1/messages"}],
            ["ListDocuments", {"parent": f"{DB}/rooms/r1", "collection_id": "messages"}],
        ],
        f"GET /v1/{DB}/rooms": [
            ["GetDocument", {"name": f"{DB}/rooms"}],  # `**` takes no segment
            ["ListDocuments", {"parent": DB, "collection_id": "rooms"}],  # the other binding
        ],
        f"POST /v1/{DB}/rooms": [["CreateDocument", {"parent": DB, "collection_id": "rooms"}]],
        "POST /v1/projects/p/locations/l/dataStores/ds/suggestionDenyListEntries:purge": [
            [
                "PurgeSuggestionDenyListEntries",
                {"parent": "projects/p/locations/l/dataStores/ds"},
            ]
        ],
        "POST /v1/projects/p/locations/l/dataStores/suggestionDenyListEntries:purge": [
            ["PurgeSuggestionDenyListEntries", {"parent": "projects/p/locations/l/dataStores"}]
        ],
        "POST /v1/projects/p/locations/l/dataStores/ds/suggestionDenyListEntries": [],
        "PATCH /v1test2/farms/f1/botSessions/b1": [
            ["UpdateBotSession", {"name": "farms/f1/botSessions/b1"}]
        ],
        "PATCH /v1test2/botSessions/b1": [["UpdateBotSession", {"name": "botSessions/b1"}]],
        "POST /v1test2/botSessions": [["CreateBotSession", {"parent": ""}]],
    }
    assert found == expected
