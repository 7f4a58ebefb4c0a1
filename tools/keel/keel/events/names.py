"""Names derived from declarations: durable consumers, dead-letter subjects and streams.

Stream and consumer names may not hold dots, so a service's full name is upper-cased with
dots as underscores (as `KEEL_TARGET_` keys are) and a subject's dots become underscores.
"""

from __future__ import annotations

DLQ_PREFIX = "keel.dlq"
REPLAY_PREFIX = "keel.replay"


def service_key(service: str) -> str:
    """`acme.catalog.v1.CatalogService` → `ACME_CATALOG_V1_CATALOGSERVICE`."""
    return service.replace(".", "_").upper()


def durable(service: str, subject: str) -> str:
    """The durable consumer of `service` for `subject`."""
    return f"{service_key(service)}-{subject.replace('.', '_')}"


def dlq_subject(service: str, subject: str) -> str:
    """Where `service`'s dead letters of `subject` go: `keel.dlq.<service>.<subject>`."""
    return f"{DLQ_PREFIX}.{service}.{subject}"


def replay_subject(service: str, subject: str) -> str:
    """Where `service`'s dead letters of `subject` are replayed: `keel.replay.<service>.<subject>`
    (kept in the subject's stream, delivered to `service`'s durable consumer only)."""
    return f"{REPLAY_PREFIX}.{service}.{subject}"


def dlq_stream(service: str) -> str:
    """The stream that keeps `service`'s dead letters."""
    return f"KEEL_DLQ_{service_key(service)}"


def dlq_subjects(service: str) -> str:
    """Every dead-letter subject of `service`."""
    return f"{DLQ_PREFIX}.{service}.>"
