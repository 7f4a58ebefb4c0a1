"""`**` before further segments, as googleapis writes it: real rules, real-looking paths.

Every rule below is copied from googleapis/googleapis (file and rpc named beside it). Each path
is matched twice, as written and with its letters percent-encoded, so both of the matcher's
routes (one regex; segment by segment) are held to the same answer.
"""

from __future__ import annotations

import re

import pytest
from keel.httprule import compile_template

# google/firestore/v1/firestore.proto: ListDocuments, CreateDocument
FIRESTORE_LIST = "/v1/{parent=projects/*/databases/*/documents/*/**}/{collection_id}"
FIRESTORE_CREATE = "/v1/{parent=projects/*/databases/*/documents/**}/{collection_id}"
# google/cloud/discoveryengine/v1/completion_service.proto: PurgeSuggestionDenyListEntries
DISCOVERY_PURGE = (
    "/v1/{parent=projects/*/locations/*/dataStores/**}/suggestionDenyListEntries:purge"
)
# google/devtools/remoteworkers/v1test2/bots.proto: UpdateBotSession, CreateBotSession
BOTS_UPDATE = "/v1test2/{name=**/botSessions/*}"
BOTS_CREATE = "/v1test2/{parent=**}/botSessions"
# google/cloud/kms/inventory/v1/key_tracking_service.proto: GetProtectedResourcesSummary
KMS_SUMMARY = "/v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/**}/protectedResourcesSummary"
# google/cloud/managedkafka/schemaregistry/v1/schema_registry.proto: GetRawSchema,
# ListSchemaVersions (its additional binding)
KAFKA_SCHEMA = "/v1/{name=projects/*/locations/*/schemaRegistries/*/schemas/**}/schema"
KAFKA_VERSIONS = (
    "/v1/{parent=projects/*/locations/*/schemaRegistries/*/contexts/*/schemas/**}/versions"
)

DB = "projects/p1/databases/(default)/documents"
DS = "projects/p/locations/global/dataStores"
KEY = "projects/p/locations/us/keyRings/r/cryptoKeys/k"
REG = "projects/p/locations/l/schemaRegistries/r"


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        # Firestore: `**` is the document path below the first collection; one segment follows.
        (
            FIRESTORE_LIST,
            f"/v1/{DB}/rooms/r1/messages",
            {"parent": f"{DB}/rooms/r1", "collection_id": "messages"},
        ),
        (
            FIRESTORE_LIST,
            f"/v1/{DB}/rooms/r1/messages/m1/reactions",
            {"parent": f"{DB}/rooms/r1/messages/m1", "collection_id": "reactions"},
        ),
        (  # `**` takes no segment
            FIRESTORE_LIST,
            f"/v1/{DB}/rooms/messages",
            {"parent": f"{DB}/rooms", "collection_id": "messages"},
        ),
        (FIRESTORE_LIST, f"/v1/{DB}/rooms", None),  # `documents/*` and the collection: 2 needed
        (FIRESTORE_LIST, "/v1/projects/p1/databases/d/rooms/r1/messages", None),
        (FIRESTORE_CREATE, f"/v1/{DB}/rooms", {"parent": DB, "collection_id": "rooms"}),
        (
            FIRESTORE_CREATE,
            f"/v1/{DB}/rooms/r1/messages",
            {"parent": f"{DB}/rooms/r1", "collection_id": "messages"},
        ),
        (FIRESTORE_CREATE, f"/v1/{DB}", None),
        # Discovery Engine: `**`, then a literal and a custom verb.
        (DISCOVERY_PURGE, f"/v1/{DS}/ds1/suggestionDenyListEntries:purge", {"parent": f"{DS}/ds1"}),
        (DISCOVERY_PURGE, f"/v1/{DS}/suggestionDenyListEntries:purge", {"parent": DS}),
        (DISCOVERY_PURGE, f"/v1/{DS}/ds1/suggestionDenyListEntries", None),
        (DISCOVERY_PURGE, f"/v1/{DS}/ds1/suggestionDenyListEntries:import", None),
        (DISCOVERY_PURGE, f"/v1/{DS}/ds1/entries:purge", None),
        # Remote Workers: `**` first inside the variable.
        (BOTS_UPDATE, "/v1test2/farms/f1/botSessions/b1", {"name": "farms/f1/botSessions/b1"}),
        (BOTS_UPDATE, "/v1test2/botSessions/b1", {"name": "botSessions/b1"}),
        (BOTS_UPDATE, "/v1test2/farms/f1/botSessions", None),
        (BOTS_UPDATE, "/v1test2/farms/f1/botSessions/b1/extra", None),
        (BOTS_CREATE, "/v1test2/farms/f1/botSessions", {"parent": "farms/f1"}),
        (BOTS_CREATE, "/v1test2/botSessions", {"parent": ""}),
        (BOTS_CREATE, "/v1test2/farms/f1/sessions", None),
        # KMS Inventory: a key, or a key version below it, then the summary literal.
        (KMS_SUMMARY, f"/v1/{KEY}/protectedResourcesSummary", {"name": KEY}),
        (
            KMS_SUMMARY,
            f"/v1/{KEY}/cryptoKeyVersions/3/protectedResourcesSummary",
            {"name": f"{KEY}/cryptoKeyVersions/3"},
        ),
        (KMS_SUMMARY, "/v1/projects/p/locations/us/keyRings/r/protectedResourcesSummary", None),
        # Managed Kafka schema registry: `**` is a schema id path, then a literal.
        (KAFKA_SCHEMA, f"/v1/{REG}/schemas/ids/7/schema", {"name": f"{REG}/schemas/ids/7"}),
        (KAFKA_SCHEMA, f"/v1/{REG}/schemas/schema", {"name": f"{REG}/schemas"}),
        (KAFKA_SCHEMA, f"/v1/{REG}/schemas/ids/7", None),
        (
            KAFKA_VERSIONS,
            f"/v1/{REG}/contexts/c/schemas/ids/7/versions",
            {"parent": f"{REG}/contexts/c/schemas/ids/7"},
        ),
        (KAFKA_VERSIONS, f"/v1/{REG}/schemas/ids/7/versions", None),
    ],
)
def test_real_rules_match_real_paths(
    template: str, path: str, expected: dict[str, str] | None
) -> None:
    matcher = compile_template(template)
    assert matcher.match(path) == expected
    # Letters percent-encoded (the verb aside) send the path segment by segment: same answer.
    head, colon, verb = path.rpartition(":") if ":" in path else (path, "", "")
    escaped = re.sub("[a-z]", lambda m: f"%{ord(m.group()):02X}", head) + colon + verb
    assert "%" in escaped
    assert matcher.match(escaped) == expected


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        # `%2F` stays encoded inside a multi-segment variable; other escapes are decoded.
        (
            BOTS_UPDATE,
            "/v1test2/farms/f%2F1/botSessions/b%201",
            {"name": "farms/f%2F1/botSessions/b 1"},
        ),
        (
            FIRESTORE_LIST,
            f"/v1/{DB}/rooms/r%2F1/a%20b",
            {"parent": f"{DB}/rooms/r%2F1", "collection_id": "a b"},
        ),
        # A single-segment variable after `**` decodes everything, `%2F` included.
        (
            FIRESTORE_LIST,
            f"/v1/{DB}/rooms/r1/a%2Fb",
            {"parent": f"{DB}/rooms/r1", "collection_id": "a/b"},
        ),
    ],
)
def test_percent_decoding_around_a_deep_wildcard(
    template: str, path: str, expected: dict[str, str]
) -> None:
    assert compile_template(template).match(path) == expected
