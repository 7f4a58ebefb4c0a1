"""`python -m catalog`: serve the catalog on its database (KEEL_DATABASE_URL, else SQLite in
its state folder), migrated at start-up when KEEL_MIGRATE=true, with seed products. With
KEEL_NATS_URL it consumes OrderPlaced and OrderCancelled beside the server (the units-sold read
model); without it, units sold stay as they are until catalog runs with a broker."""

import keel
from keel.data import prepare

from catalog.events import CatalogEvents
from catalog.service import CatalogService
from catalog.store import SqlStore, seed


def main() -> None:
    db = prepare("catalog")
    events = keel.events.background(db, subscribers=[CatalogEvents()])
    keel.serve([CatalogService(seed(SqlStore(db)))], background=events)


if __name__ == "__main__":
    main()
