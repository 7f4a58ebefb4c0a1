"""`python -m catalog`: serve the catalog with seed data."""

import keel

from catalog.service import CatalogService
from catalog.store import MemoryStore, seed


def main() -> None:
    keel.serve([CatalogService(seed(MemoryStore()))])


if __name__ == "__main__":
    main()
