"""The military health facility network: DHA, its markets, MTFs, VA facilities, network providers.

The catalogue API here is pure Python (no database) and stable; other modules build on it:

    from garrison.network import catalogue, facility_by_code, Facility, Service, StaffRole
    from garrison.network.load import load_network, NetworkSummary        # FHIR resources
    from garrison.network.rollout import rollout_status, set_rollout_status  # deployment status

This module imports nothing from the database or FHIR layers, so `garrison.db.schema` can import
`garrison.network.tables` without pulling the FHIR layer in.
"""

from __future__ import annotations

from garrison.network.catalogue import catalogue, children_of, facility_by_code, market_of, tricare_payer
from garrison.network.model import (
    ROLLOUT_ORDER,
    Agency,
    Facility,
    Payer,
    Practitioner,
    Rollout,
    RolloutStatus,
    Service,
    StaffRole,
)

__all__ = [
    "ROLLOUT_ORDER",
    "Agency",
    "Facility",
    "Payer",
    "Practitioner",
    "Rollout",
    "RolloutStatus",
    "Service",
    "StaffRole",
    "catalogue",
    "children_of",
    "facility_by_code",
    "market_of",
    "tricare_payer",
]
