"""The `bastion` command. The only place that maps exceptions to exit codes and messages."""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.markup import escape

from bastion._version import __version__

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as _click
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as _click  # type: ignore[no-redef]
from bastion.cli._console import err_console
from bastion.cli.assess import assess
from bastion.cli.audit import audit_app
from bastion.cli.data import data_app
from bastion.cli.demo import demo
from bastion.cli.drift import drift
from bastion.cli.encrypt import encrypt_model
from bastion.cli.harden import harden
from bastion.cli.incidents import incidents_app
from bastion.cli.intel import intel_app
from bastion.cli.keys import keys_app
from bastion.cli.redteam import redteam_app
from bastion.cli.registry import registry_app
from bastion.cli.serve import serve
from bastion.cli.threat import threat_app
from bastion.cli.train import train
from bastion.errors import BastionError

app = typer.Typer(
    name="bastion",
    help="Secure machine-learning models: red-team, harden, sign, serve, monitor, respond.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(train)
app.command()(assess)
app.command()(demo)
app.command()(serve)
app.command()(drift)
app.command()(harden)
app.command("encrypt-model")(encrypt_model)
app.add_typer(keys_app, name="keys")
app.add_typer(incidents_app, name="incidents")
app.add_typer(audit_app, name="audit")
app.add_typer(threat_app, name="threat")
app.add_typer(data_app, name="data")
app.add_typer(registry_app, name="registry")
app.add_typer(redteam_app, name="redteam")
app.add_typer(intel_app, name="intel")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"bastion {__version__}")
        raise typer.Exit(0)


# commands that mostly never touch torch: its 3 s import is paid only by the few that do (they call
# configure_threads themselves, see bastion.cli.registry)
_TORCHLESS = {"registry"}


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", help="print the version and exit", is_eager=True, callback=_print_version
    ),
) -> None:
    """Secure machine-learning models: red-team, harden, sign, serve, monitor, respond."""
    if ctx.invoked_subcommand in _TORCHLESS:
        return
    from bastion._torch import configure_threads  # torch loads here, for a command, never for --version or --help

    configure_threads()


def one_line(e: BastionError) -> str:
    """The error as one line: its message, then each problem it collected, separated by semicolons."""
    text = e.message if isinstance(getattr(e, "message", None), str) else str(e)
    if e.problems:
        text = f"{text.rstrip(':')}: {'; '.join(e.problems)}"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) 0 ok, 1 policy gate failed, 2 user error, 3 internal/remote error."""
    logging.basicConfig(level=os.environ.get("BASTION_LOG", "WARNING").upper(), format="%(levelname)s %(message)s")
    command = typer.main.get_command(app)
    code = 0
    try:
        # not standalone: usage errors come here too, so every error is printed the same way, on one line
        result = command.main(args=argv, prog_name="bastion", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except _click.NoArgsIsHelpError:  # `bastion` or `bastion keys` alone: the help was shown, nothing was run
        code = 2
    except _click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "bastion"
        err_console.print(
            f"[red]error:[/] {escape(' '.join(e.format_message().split()))} (see {escape(where)} --help)",
            highlight=False,
            soft_wrap=True,
        )
        code = 2
    except _click.ClickException as e:
        err_console.print(f"[red]error:[/] {escape(' '.join(e.format_message().split()))}", highlight=False)
        code = e.exit_code
    except typer.Abort:
        code = 130
    except typer.Exit as e:
        code = e.exit_code
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except BastionError as e:
        err_console.print(f"[red]error:[/] {escape(one_line(e))}", highlight=False, soft_wrap=True)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as e:
        if os.environ.get("BASTION_DEBUG"):
            raise
        err_console.print(
            f"[red]internal error:[/] {escape(type(e).__name__)}: {escape(str(e))} "
            "(set BASTION_DEBUG=1 for a traceback)"
        )
        code = 3
    if argv is None:
        sys.exit(code)
    return code
