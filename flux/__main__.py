"""``python -m flux``: the ``flux`` command."""

from flux.cli import main

if __name__ == "__main__":
    main()
