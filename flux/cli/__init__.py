"""The ``flux`` command: run, inspect and operate workflows from a terminal.

``flux --help`` lists the commands; ``flux COMMAND --help`` explains one with an example. The
command is a thin layer over the engine's public API. ``main`` is the console script's entry
point (``python -m flux`` calls it too).

A new subcommand takes the common options (``--db``, ``--app``, ``-v``, before or after its
name) through :func:`command`; its function gets the merged :class:`Options` first::

    @command(short_help="Say hello.", epilog="Example: flux hello")
    def hello(opts: Options) -> None:
        click.echo(f"hello from {opts.url}")
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Sequence

import click

from flux.cli import _check, _drive, _inspect, _serve  # noqa: F401  (they register the commands)
from flux.cli._base import EXIT_FAILED, EXIT_USAGE, Options, cli, command, with_engine
from flux.cli._load import CliError, load_workflow
from flux.errors import FluxError, StorageError

__all__ = ["CliError", "Options", "cli", "command", "load_workflow", "main", "with_engine"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``flux`` command with ``argv`` (default ``sys.argv[1:]``) and exit.

    Bad input (an unknown run, step or workflow, malformed JSON, a module that does not import)
    prints one line on stderr and exits with code 2; ``-v`` adds the traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(re.fullmatch(r"-v+|--verbose", arg) for arg in args)
    try:
        code = cli.main(args, prog_name="flux", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        code = EXIT_FAILED
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (CliError, FluxError) as exc:
        code = EXIT_FAILED if isinstance(exc, StorageError) else EXIT_USAGE
        _error(exc, verbose)
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a bug or an environment problem: say so, keep it short
        _error(exc, verbose, prefix=f"unexpected {type(exc).__name__}: ")
        code = EXIT_FAILED
    sys.exit(code if isinstance(code, int) else 0)


def _error(exc: BaseException, verbose: bool, prefix: str = "") -> None:
    if verbose:
        traceback.print_exception(exc)
    message = " ".join(str(exc).split())
    click.echo(f"flux: error: {prefix}{message}", err=True)
