"""``python -m medtransfer`` is the ``medtransfer`` command."""

from medtransfer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
