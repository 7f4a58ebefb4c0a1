"""`python -m catalog`: serve the catalog on its database (KEEL_DATABASE_URL, else SQLite in
its state folder), migrated at start-up when KEEL_MIGRATE=true, with seed products."""

import keel
from keel.data import prepare

from catalog.service import CatalogService
from catalog.store import SqlStore, seed


def main() -> None:
    db = prepare("catalog")
    keel.serve([CatalogService(seed(SqlStore(db)))])


if __name__ == "__main__":
    main()
