"""The ASGI application: the FHIR API under /fhir and a small landing page."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from garrison import empi
from garrison.db.engine import make_engine
from garrison.fhir.definitions import definitions_from
from garrison.settings import Settings
from garrison.web.fhir_api import FhirApi

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]

_LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Garrison</title></head>
<body><main><h1>Garrison</h1>
<p>The FHIR R4 API is at <a href="/fhir/metadata">/fhir</a>
(<a href="/fhir/metadata">CapabilityStatement</a>,
<a href="/fhir/Patient?_count=20">patients</a>).</p></main></body></html>
"""


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    engine = make_engine(settings.resolved_database_url())
    definitions = definitions_from(settings.definitions_dir)
    empi.register()  # Patient/$match, $merge, $unmerge
    fhir_api = FhirApi(settings, engine, definitions)

    async def landing(_request: Request) -> Response:
        return HTMLResponse(_LANDING)

    app = Starlette(
        routes=[
            Route("/", landing, methods=["GET"]),
            Route("/fhir", fhir_api.__call__, methods=_METHODS),
            Route("/fhir/{path:path}", fhir_api.__call__, methods=_METHODS),
        ]
    )
    app.state.engine = engine
    app.state.settings = settings
    return app
