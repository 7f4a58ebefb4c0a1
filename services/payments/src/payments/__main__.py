"""`python -m payments`: serve payments."""

import keel

from payments.service import PaymentService


def main() -> None:
    keel.serve([PaymentService()])


if __name__ == "__main__":
    main()
