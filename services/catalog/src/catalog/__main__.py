"""`python -m catalog`: serve the catalog on its database (KEEL_DATABASE_URL, else SQLite in
its state folder), migrated at start-up when KEEL_MIGRATE=true, with seed products. With
KEEL_NATS_URL it consumes OrderPlaced and OrderCancelled beside the server (the units-sold read
model); without it, units sold stay as they are until catalog runs with a broker."""

import sys

import keel
from keel.data import prepare
from keel.runtime import config

from catalog.service import CatalogService
from catalog.store import SqlStore, seed


def main() -> None:
    db = prepare("catalog")
    background = []
    if config.current().nats_url:
        from keel.events import Consumers  # noqa: PLC0415 (NATS: only with a broker)

        from catalog.events import CatalogEvents  # noqa: PLC0415

        background.append(Consumers(db, [CatalogEvents()]))
    else:
        print(
            "catalog: KEEL_NATS_URL is not set: units sold do not follow the orders' events",
            file=sys.stderr,
        )
    keel.serve([CatalogService(seed(SqlStore(db)))], background=background)


if __name__ == "__main__":
    main()
