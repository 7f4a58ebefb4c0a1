"""`python -m catalog`: serve the catalog on its database (KEEL_DATABASE_URL, else SQLite in
its state folder), migrated at start-up when KEEL_MIGRATE=true, with seed products, under the
shop's settings (CATALOG_*, catalog.settings; read once, here). With KEEL_NATS_URL it consumes
OrderPlaced and OrderCancelled beside the server (the units-sold read model); without it,
units sold stay as they are until catalog runs with a broker."""

import sys

import keel
from keel.data import prepare

from catalog.events import CatalogEvents
from catalog.service import CatalogService
from catalog.settings import SettingsError, load
from catalog.store import SqlStore, seed


def main() -> None:
    try:
        settings = load()
    except SettingsError as error:
        sys.exit(f"catalog: {error}")
    db = prepare("catalog")
    events = keel.events.background(db, subscribers=[CatalogEvents()])
    store = seed(SqlStore(db), settings.currency)
    keel.serve([CatalogService(store, settings)], background=events)


if __name__ == "__main__":
    main()
