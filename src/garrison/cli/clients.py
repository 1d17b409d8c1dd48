"""`garrison clients ...`: register, list, disable and re-enable OAuth clients.

`garrison clients add --name N --jwks FILE --scope "system/*.rs"` registers a SMART backend
services client and prints its client id alone on the last line, so scripts can capture it with
`tail -n 1`. With `--redirect-uri` (repeatable) it registers a user-facing app: `--public` for a
browser or phone app (PKCE only), otherwise a confidential one (with `--jwks` for private_key_jwt,
or a client secret that is printed once).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy import Connection

from garrison.db.engine import make_engine, read_transaction, write_transaction
from garrison.db.migrate import upgrade
from garrison.settings import Settings

CLI_ACTOR = "system/cli"


@contextmanager
def _connection(*, write: bool) -> Iterator[Connection]:
    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    try:
        upgrade(engine)
        transaction = write_transaction if write else read_transaction
        with transaction(engine) as conn:
            yield conn
    finally:
        engine.dispose()


@click.group()
def clients() -> None:
    """OAuth 2 / SMART clients: applications and backend systems."""


@clients.command("add")
@click.option("--name", required=True, help="A name people recognise (shown on the consent page).")
@click.option(
    "--jwks",
    "jwks_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON Web Key Set with the client's PUBLIC keys (private_key_jwt).",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help='Scopes it may be granted, space-separated and/or repeated: "system/*.rs".',
)
@click.option(
    "--redirect-uri", "redirect_uris", multiple=True, help="Redirect URI of a user-facing app (repeatable)."
)
@click.option("--public", "public", is_flag=True, help="A public app (no secret; PKCE).")
def add(
    name: str, jwks_file: Path | None, scopes: tuple[str, ...], redirect_uris: tuple[str, ...], public: bool
) -> None:
    """Register a client; the last line printed is its client id."""
    from garrison.oauth import events
    from garrison.oauth.clients import ClientRegistrationError, register_client
    from garrison.oauth.model import ClientType

    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text())
        except (OSError, ValueError) as error:
            raise click.ClickException(f"{jwks_file}: not a JSON file ({error})") from error
    client_type: ClientType = "public" if public else ("confidential" if redirect_uris else "backend")
    scope_list = [s for item in scopes for s in item.split()]
    with _connection(write=True) as conn:
        try:
            registered = register_client(
                conn,
                name=name,
                client_type=client_type,
                scopes=scope_list,
                redirect_uris=redirect_uris,
                jwks=jwks,
            )
        except ClientRegistrationError as error:
            raise click.ClickException(str(error)) from error
        client = registered.client
        events.record(
            conn,
            "oauth:client:registered",
            "success",
            actor=CLI_ACTOR,
            role="administrator",
            detail={
                "client_id": client.client_id,
                "type": client.client_type,
                "scope": " ".join(client.scopes),
            },
        )
    click.echo(f"registered {client.client_type} client {client.name!r}")
    click.echo(f"scopes: {' '.join(client.scopes)}")
    for uri in client.redirect_uris:
        click.echo(f"redirect URI: {uri}")
    if registered.secret is not None:
        click.echo(f"client secret (shown only now; keep it safe): {registered.secret}")
    click.echo(client.client_id)


@clients.command("list")
def list_command() -> None:
    """List registered clients."""
    from garrison.oauth.clients import list_clients

    with _connection(write=False) as conn:
        found = list_clients(conn)
    if not found:
        click.echo("no clients registered")
        return
    for client in found:
        state = "disabled" if client.disabled else "enabled"
        scopes = " ".join(client.scopes)
        click.echo(f"{client.client_id}  {client.client_type:<12} {state:<8} {client.name}  [{scopes}]")


def _set_disabled(client_id: str, disabled: bool) -> int:
    from garrison.oauth import events
    from garrison.oauth.clients import set_client_disabled
    from garrison.oauth.tokens import revoke_tokens_for_client

    with _connection(write=True) as conn:
        if not set_client_disabled(conn, client_id, disabled):
            raise click.ClickException(f"no client {client_id!r}")
        revoked = 0
        if disabled:
            revoked = revoke_tokens_for_client(conn, client_id, actor=CLI_ACTOR, role="administrator")
        events.record(
            conn,
            "oauth:client:disabled" if disabled else "oauth:client:enabled",
            "success",
            actor=CLI_ACTOR,
            role="administrator",
            detail={"client_id": client_id},
        )
    return revoked


@clients.command("disable")
@click.argument("client_id")
def disable(client_id: str) -> None:
    """Disable a client and revoke every token it holds."""
    revoked = _set_disabled(client_id, True)
    click.echo(f"disabled {client_id}; revoked {revoked} tokens")


@clients.command("enable")
@click.argument("client_id")
def enable(client_id: str) -> None:
    """Re-enable a disabled client (its old tokens stay revoked)."""
    _set_disabled(client_id, False)
    click.echo(f"enabled {client_id}")
