"""The application object, the one-line error policy and the console script.

Every command turns a `UserError` into one line on stderr and exit code 2; nothing the user can
fix ends in a traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from rerank_eval.cli.options import FLAGS
from rerank_eval.errors import UserError
from rerank_eval.pipeline.interrupt import STOP_SIGNALS, STOPPED_AT_ONCE
from rerank_eval.runtime.distributed import leave_job

# Tables keep their full width when written to a file or a pipe.
# Paths and names from users reach these consoles: printed as written, never read as Rich markup
# (`[bold]x.csv` would print as x.csv, `[link=...]` make a hyperlink).
console = Console(markup=False) if Console().is_terminal else Console(width=200, markup=False)
error_console = Console(stderr=True, markup=False)
F = TypeVar("F", bound=Callable[..., Any])


#: the most of a message printed from each end: it may quote a value of any size (a 5,000-digit
#: score), and its end may say what to do (the fetch command of an offline run)
ERROR_END_CHARACTERS = 2000


def print_error(message: str) -> None:
    """The one `error:` line (the message quotes user input, so it is escaped; a very long one
    loses its middle)."""
    if len(message) > 2 * ERROR_END_CHARACTERS:
        left_out = len(message) - 2 * ERROR_END_CHARACTERS
        message = (
            f"{message[:ERROR_END_CHARACTERS]} ... ({left_out:,} characters left out) ... "
            f"{message[-ERROR_END_CHARACTERS:]}"
        )
    error_console.print(
        f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True
    )


class OneLineUsageErrors(TyperGroup):
    """Click's usage errors (an unknown option, a missing argument, a bad value) as the same one
    `error:` line every other problem gets, naming the help to read, instead of a boxed panel."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            error_console.print("Aborted!", highlight=False)
            sys.exit(1)
        except typer.TyperException as exc:  # Typer's (vendored) Click errors derive from it
            # `rerank-eval` alone raises NoArgsIsHelpError after printing the help (Typer's check)
            if type(exc).__name__ != "NoArgsIsHelpError":
                context = getattr(exc, "ctx", None)
                hint = f"; see {context.command_path} --help" if context is not None else ""
                print_error(exc.format_message().rstrip(".") + hint)  # type: ignore[attr-defined]
            sys.exit(getattr(exc, "exit_code", 2))
        # without standalone mode Click returns an exit code (or the command's None) instead of exiting
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineUsageErrors,
    help="Trustworthy nDCG@10 of document rerankers on BEIR and MIRACL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


#: what a path the file system cannot take is, by errno, wherever it is first used
_PATH_ERRORS = {errno.ENAMETOOLONG: "file name too long", errno.ELOOP: "symlink loop"}


def user_errors(command: F) -> F:
    """Print a UserError as one line and exit 2; Ctrl-C exits 130.

    The outer `try` also catches a Ctrl-C that lands while the error line of a first, graceful stop
    is being printed: the second press then still ends in exit 130 and one line, not a traceback.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                result = command(*args, **kwargs)
                leave_job()  # (under torchrun; a failed rank leaves its group to the exit)
                return result
            except UserError as exc:
                print_error(exc.render(FLAGS))
                raise typer.Exit(exc.exit_code) from None
            except OSError as exc:  # a path the file system cannot take, wherever it is first used
                if exc.errno not in _PATH_ERRORS:
                    raise
                print_error(f"{_PATH_ERRORS[exc.errno]}: {exc.filename}")
                raise typer.Exit(UserError.exit_code) from None
            except RuntimeError as exc:  # Path.resolve() meeting a symlink loop (Python < 3.13)
                if not str(exc).startswith("Symlink loop from "):
                    raise
                print_error(f"symlink loop: {str(exc).removeprefix('Symlink loop from ')}")
                raise typer.Exit(UserError.exit_code) from None
        except KeyboardInterrupt:
            error_console.print(
                f"{STOPPED_AT_ONCE}: run the same command again to resume",
                highlight=False,
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_version(asked: bool) -> None:
    if asked:
        from rerank_eval import __version__

        print(f"rerank-eval {__version__}")
        raise typer.Exit()


@app.callback()
def everywhere(
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show ir_datasets' own log lines (files opened, retries).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print rerank-eval's version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """Trustworthy nDCG@10 of document rerankers on BEIR and MIRACL."""
    from rerank_eval.runtime.progress import calm_library_bars

    calm_library_bars()  # first: ir_datasets imports tqdm
    from rerank_eval.datasets.ir_dataset import quiet_ir_datasets

    quiet_ir_datasets(not verbose)


def main() -> None:
    """The console script.

    A stopped run (exit 130 after Ctrl-C, 143 after SIGTERM) ends without interpreter shutdown,
    once its output is flushed: its journal, shards and indexes are whole already, and shutdown
    can only turn the exit code into an abort. It unwinds any thread still in a library's native
    code, and torch's C++ error handlers catch that unwinding without rethrowing it: with a thread
    busy in torch the process aborted (exit 134, "terminate called without an active exception"
    or "FATAL: exception not rethrown", once seen in the tests after two quick Ctrl-C) instead of
    exiting 130. Further stop signals are ignored meanwhile.
    """
    try:
        app()
    except SystemExit as exiting:
        if exiting.code in STOPPED_EXIT_CODES:
            _end_stopped(int(exiting.code))
        raise
    except KeyboardInterrupt:  # a second press landing on the way out of a first stop (its line
        _end_stopped(130)  # is printed), or one before any command began: no traceback


#: the exit codes of a run stopped by a signal (130 for Ctrl-C, 143 for SIGTERM)
STOPPED_EXIT_CODES = tuple(128 + signum for signum in STOP_SIGNALS)


def _end_stopped(code: int) -> NoReturn:
    """End the process with `code` at once (see `main`), what it printed flushed first."""
    for signum in STOP_SIGNALS:  # from here on, a stop signal would only turn `code` into death
        signal.signal(signum, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)
