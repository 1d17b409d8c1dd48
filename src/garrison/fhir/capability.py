"""The CapabilityStatement: a truthful list of what this server does
(https://hl7.org/fhir/R4/capabilitystatement.html).

It is generated from the same definitions the server runs on, so it cannot drift from them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from garrison import __version__
from garrison.fhir.definitions import Definitions
from garrison.fhir.operations import OPERATIONS

_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]

# Search parameters that every type supports beyond its own definitions.
_COMMON_PARAMS = [
    ("_id", "token"),
    ("_lastUpdated", "date"),
    ("_tag", "token"),
    ("_profile", "uri"),
    ("_security", "token"),
    ("_has", "special"),
]


def _security(base_url: str) -> dict[str, Any]:
    """SMART on FHIR: https://hl7.org/fhir/smart-app-launch/conformance.html (the endpoints are
    also in .well-known/smart-configuration)."""
    origin = base_url.rstrip("/").removesuffix("/fhir")
    return {
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": "OAuth 2 bearer tokens from Garrison's SMART authorization server",
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": name, "valueUri": f"{origin}/oauth/{path}"}
                    for name, path in (
                        ("authorize", "authorize"),
                        ("token", "token"),
                        ("revoke", "revoke"),
                        ("introspect", "introspect"),
                    )
                ],
            }
        ],
    }


def capability_statement(definitions: Definitions, base_url: str) -> dict[str, Any]:
    return _build(definitions, base_url)


@cache
def _build(definitions: Definitions, base_url: str) -> dict[str, Any]:
    resources = []
    for resource_type in sorted(definitions.resource_types):
        params = definitions.params_for(resource_type)
        search_params = [
            {"name": name, "type": kind} for name, kind in _COMMON_PARAMS if name in params or name == "_has"
        ]
        search_params += [
            {"name": p.code, "definition": p.url, "type": p.type}
            for code, p in sorted(params.items())
            if not code.startswith("_") and p.type != "special" and p.expression
        ]
        operations = [
            {"name": op.name, "definition": op.definition}
            for op in OPERATIONS.values()
            if op.applies_to(resource_type, None) or op.applies_to(resource_type, "x")
        ]
        entry: dict[str, Any] = {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code} for code in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-match",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical", "local"],
            "searchInclude": [
                "*",
                *sorted(f"{resource_type}:{p.code}" for p in params.values() if p.type == "reference"),
            ],
            "searchRevInclude": ["*"],
            "searchParam": search_params,
        }
        if operations:
            entry["operation"] = operations
        if resource_type == "AuditEvent":
            # Served read-only from the tamper-evident audit log.
            entry["interaction"] = [{"code": "read"}, {"code": "search-type"}]
            for key in (
                "versioning",
                "readHistory",
                "updateCreate",
                "conditionalCreate",
                "conditionalRead",
                "conditionalUpdate",
                "conditionalDelete",
                "searchInclude",
                "searchRevInclude",
            ):
                entry.pop(key, None)
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "publisher": "Garrison",
        "kind": "instance",
        "software": {"name": "Garrison", "version": __version__},
        "implementation": {"description": "Garrison FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "security": _security(base_url),
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "search-system"},
                    {"code": "history-system"},
                ],
                "searchParam": [{"name": name, "type": kind} for name, kind in _COMMON_PARAMS]
                + [{"name": "_type", "type": "token"}],
            }
        ],
    }
