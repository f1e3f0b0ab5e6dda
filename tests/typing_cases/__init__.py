"""Snippets that pin what mypy infers for flux's API; ``tests/test_typing.py`` type-checks them."""
