"""The ``stylize`` command: one Typer sub-app per concern, and the one place errors meet the user.

No traceback reaches a user (``run``):

- a ``StylizeError`` is one ``error: ...`` line and its ``exit_code`` (README, "Errors and exit codes");
- a bad command line (unknown option, bad number, missing argument) is the usage line plus one
  ``error: ...`` line, exit code 2;
- anything else is a bug: one ``internal error: <type>: <message>`` line that names the log file
  holding the full traceback (``$STYLIZE_LOG_DIR``, default ``~/.cache/stylize/logs``), exit code 70
  (``EX_SOFTWARE``).

``stylize --debug ...`` (or ``STYLIZE_DEBUG=1``) re-raises instead, so the traceback shows.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import bench, gallery, image, jobs, manifest, models, nightly, report, train, video
from pipeline.errors import StylizeError

INTERNAL_ERROR = 70  # sysexits.h EX_SOFTWARE
DEBUG_ENV = "STYLIZE_DEBUG"
LOG_DIR_ENV = "STYLIZE_LOG_DIR"

app = typer.Typer(
    name="stylize",
    help="Neural style transfer for single images and whole archives.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class _Settings:
    debug = False


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", envvar=DEBUG_ENV, help="Show full tracebacks instead of one-line errors.")
    ] = False,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Never download published weights on first use (as STYLIZE_OFFLINE=1)."),
    ] = False,
) -> None:
    _Settings.debug = debug
    if offline:  # read by pipeline.models.fetch in this process and in the Ray workers it starts
        os.environ["STYLIZE_OFFLINE"] = "1"


app.command("image")(image.image)
app.command("video")(video.video)
app.add_typer(models.app, name="models")
app.add_typer(manifest.app, name="manifest")
jobs.attach(app)  # run, submit, status, logs, stop, demo
nightly.attach(app)
app.command("report")(report.report)
app.add_typer(bench.app, name="bench")
app.add_typer(train.app, name="train")
app.command("gallery")(gallery.gallery)


def _env_debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def log_dir() -> Path:
    """Where internal errors' tracebacks go: ``$STYLIZE_LOG_DIR`` or ``~/.cache/stylize/logs``."""
    return Path(os.environ.get(LOG_DIR_ENV) or Path.home() / ".cache" / "stylize" / "logs").expanduser()


def write_log(text: str, argv: list[str]) -> Path:
    """Write ``text`` with the command line to a new log file; falls back to the temp dir if needed."""
    name = f"stylize-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    body = f"command: stylize {' '.join(argv)}\ntime: {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n\n{text}"
    for folder in (log_dir(), Path(tempfile.gettempdir()) / "stylize-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(body)
            return path
        except OSError:
            continue
    raise OSError("no writable log directory")


def _say(line: str) -> None:
    typer.secho(line, err=True, fg=typer.colors.RED)


def _stylize_error(exc: StylizeError, argv: list[str]) -> int:
    # a Ray task error is a subclass of the remote exception's class whose text is the remote
    # traceback: report the original exception
    cause = getattr(exc, "cause", None)
    if isinstance(cause, StylizeError):
        exc = cause
    lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    if len(lines) == 1:
        _say(f"error: {lines[0]}")
    else:
        try:
            where = f" (details written to {write_log(str(exc), argv)})"
        except OSError:
            where = ""
        _say(f"error: {lines[0]}{where}")
    return exc.exit_code


def _command_line_error(exc: typer.TyperException) -> int:
    """Typer's own errors (its vendored click's ``UsageError`` family): usage line, then one ``error:`` line."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # `stylize`, `stylize models`: the help
        typer.echo(ctx.get_help(), err=True)
        return exc.exit_code
    hint = ""
    if ctx is not None:
        typer.echo(ctx.get_usage(), err=True)
        hint = f" (see `{ctx.command_path} --help`)"
    _say(f"error: {exc.format_message()}{hint}")
    return exc.exit_code


def _internal_error(exc: BaseException, argv: list[str]) -> int:
    message = " ".join(str(exc).split())
    if len(message) > 300:
        message = message[:300] + "..."
    try:
        where = f"traceback written to {write_log(traceback.format_exc(), argv)}"
    except OSError:
        where = "no log directory was writable; rerun with --debug to see the traceback"
    _say(f"internal error: {type(exc).__name__}: {message} ({where})")
    return INTERNAL_ERROR


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return the exit code; see the module doc."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _Settings.debug = _env_debug()
    try:
        result = app(args=argv, prog_name="stylize", standalone_mode=False)
    except typer.TyperException as exc:  # bad option, bad number, missing argument...
        return _command_line_error(exc)
    except typer.Abort:
        _say("error: aborted")
        return 1
    except KeyboardInterrupt:
        _say("error: interrupted")
        return 130
    except StylizeError as exc:
        if _Settings.debug:
            raise
        return _stylize_error(exc, argv)
    except Exception as exc:  # noqa: BLE001 - the edge: a bug becomes one line and a log file
        if _Settings.debug:
            raise
        return _internal_error(exc, argv)
    # standalone_mode=False returns the command's value, or the code of a typer.Exit
    return result if isinstance(result, int) else 0


def main() -> None:
    """The console script: run the command, then end the process at once (``raysession.exit_now``).

    Every output, metrics file, manifest and ``_SUCCESS`` is written before the command returns, so
    nothing is lost by skipping the interpreter's teardown, and two things are gained: no wait for
    ``ray.shutdown`` after a command that started Ray, and no abort at exit (``terminate called without an
    active exception``, exit 134) when a native thread pool (pyarrow's, apache/arrow#34314) is torn down
    while one of its threads is alive: `stylize manifest build` died so about one run in ten here.
    ``run`` called in-process (tests, notebooks) returns normally."""
    from pipeline.raysession import exit_now

    exit_now(run())
