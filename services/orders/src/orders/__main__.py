"""`python -m orders`: serve orders; catalog and payments are found through discovery."""

import keel

from orders.service import OrderService


def main() -> None:
    keel.serve([OrderService()])


if __name__ == "__main__":
    main()
