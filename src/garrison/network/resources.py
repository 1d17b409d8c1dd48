"""FHIR R4 representation of the facility network (pure functions: catalogue entry in, JSON out).

- Organization (https://hl7.org/fhir/R4/organization.html): every catalogue entry, the hierarchy
  DHA → market → facility (and VHA → medical center → clinic) through `partOf`; identified by
  DMIS ID, VA station number or network provider number; typed with Garrison's facility kind and
  HL7 organization-type. Plus the TRICARE payer Organization used as Coverage.payor.
- Location (https://hl7.org/fhir/R4/location.html): the place of care of each facility, with its
  IANA time zone in the `FACILITY_TIME_ZONE` extension, so times can be shown in the facility's zone.
- HealthcareService (https://hl7.org/fhir/R4/healthcareservice.html): one per facility service,
  coded with HL7 service-category and service-type plus Garrison's own service code.
- Practitioner and PractitionerRole (https://hl7.org/fhir/R4/practitionerrole.html): the
  synthetic staff, each with one role at one facility and the services they work in.

References are passed in as ids, so these builders know nothing about the database.
"""

from __future__ import annotations

from typing import Any

from garrison.beneficiaries.vocabulary import (
    FACILITY_KIND_SYSTEM,
    FACILITY_TIME_ZONE,
    HEALTHCARE_SERVICE_ID,
    HEALTHCARE_SERVICE_SYSTEM,
    NPI,
    PAYER_ID,
    PRACTITIONER_ROLE_ID,
    SERVICE_BRANCH,
    SERVICE_BRANCH_DISPLAY,
    SERVICE_BRANCH_SYSTEM,
    STAFF_ROLE_SYSTEM,
    V3_ROLE_CODE,
    VA_STATION,
    FacilityKind,
)
from garrison.network.model import Facility, Payer, Practitioner, Service, StaffRole

ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
SERVICE_CATEGORY = "http://terminology.hl7.org/CodeSystem/service-category"
SERVICE_TYPE = "http://terminology.hl7.org/CodeSystem/service-type"
PRACTITIONER_ROLE = "http://terminology.hl7.org/CodeSystem/practitioner-role"

FACILITY_KIND_DISPLAY: dict[FacilityKind, str] = {
    FacilityKind.MTF_HOSPITAL: "Military treatment facility: medical center or hospital",
    FacilityKind.MTF_CLINIC: "Military treatment facility: clinic",
    FacilityKind.MTF_DENTAL: "Military dental clinic",
    FacilityKind.VA_MEDICAL_CENTER: "VA medical center",
    FacilityKind.VA_CLINIC: "VA community-based outpatient clinic",
    FacilityKind.JOINT: "Joint DoD/VA federal health care center",
    FacilityKind.NETWORK: "TRICARE network civilian provider",
    FacilityKind.HEADQUARTERS: "Headquarters, region or market",
}

# Service → (display, HL7 service-category code, HL7 service-type code): codes checked against
# the R4 code systems (terminology.hl7.org/CodeSystem/service-category and .../service-type).
SERVICE_CODES: dict[Service, tuple[str, str, str]] = {
    Service.PRIMARY_CARE: ("Primary care", "17", "124"),
    Service.URGENT_CARE: ("Urgent care", "17", "556"),
    Service.EMERGENCY: ("Emergency department", "14", "117"),
    Service.BEHAVIORAL_HEALTH: ("Behavioral health", "22", "490"),
    Service.OPTOMETRY: ("Optometry", "34", "62"),
    Service.AUDIOLOGY: ("Audiology", "34", "50"),
    Service.PHYSICAL_THERAPY: ("Physical therapy", "34", "65"),
    Service.DENTAL: ("Dental", "10", "88"),
    Service.PHARMACY: ("Pharmacy", "34", "64"),
    Service.LABORATORY: ("Laboratory", "26", "159"),
    Service.RADIOLOGY: ("Radiology", "30", "209"),
    Service.IMMUNIZATIONS: ("Immunizations", "7", "57"),
    Service.WOMENS_HEALTH: ("Women's health", "28", "559"),
    Service.PEDIATRICS: ("Pediatrics", "29", "200"),
    Service.ORTHOPEDICS: ("Orthopedics", "31", "218"),
    Service.GENERAL_SURGERY: ("General surgery", "31", "221"),
}
_CATEGORY_DISPLAY = {
    "7": "Community Health Care",
    "10": "Dental",
    "14": "Emergency Department",
    "17": "General Practice",
    "22": "Mental Health",
    "26": "Specialist Clinical Pathology",
    "28": "Specialist Obstetrics & Gynecology",
    "29": "Specialist Paediatric",
    "30": "Specialist Radiology/Imaging",
    "31": "Specialist Surgical",
    "34": "Allied Health",
}
_TYPE_DISPLAY = {
    "124": "General Practice",
    "556": "Walk-in Centre /Non-Emergency",
    "117": "Emergency Medical",
    "490": "General Mental Health Services",
    "62": "Optometry",
    "50": "Audiology",
    "65": "Physiotherapy",
    "88": "General Dental",
    "64": "Pharmacy",
    "159": "Pathology - General",
    "209": "Diag. Radiology /Xray /CT /Fluoroscopy",
    "57": "Immunization",
    "559": "Women's Health",
    "200": "Paediatric Medicine",
    "218": "Orthopaedic Surgery",
    "221": "Surgery - General",
}

STAFF_ROLE_DISPLAY: dict[StaffRole, str] = {
    StaffRole.PHYSICIAN: "Physician",
    StaffRole.NURSE: "Registered nurse",
    StaffRole.PHARMACIST: "Pharmacist",
    StaffRole.PHYSICAL_THERAPIST: "Physical therapist",
    StaffRole.BEHAVIORAL_HEALTH: "Behavioral health provider",
    StaffRole.DENTIST: "Dentist",
    StaffRole.FRONT_DESK: "Front desk (scheduling and check-in)",
}
# The roles HL7's small practitioner-role code system has a code for.
_HL7_ROLE: dict[StaffRole, tuple[str, str]] = {
    StaffRole.PHYSICIAN: ("doctor", "Doctor"),
    StaffRole.DENTIST: ("doctor", "Doctor"),
    StaffRole.NURSE: ("nurse", "Nurse"),
    StaffRole.PHARMACIST: ("pharmacist", "Pharmacist"),
}


def service_display(service: Service) -> str:
    return SERVICE_CODES[service][0]


def _reference(resource_type: str, resource_id: str, display: str | None = None) -> dict[str, str]:
    reference = {"reference": f"{resource_type}/{resource_id}"}
    if display:
        reference["display"] = display
    return reference


def facility_identifiers(facility: Facility) -> list[dict[str, Any]]:
    identifiers: list[dict[str, Any]] = [
        {"use": "official", "system": facility.identifier_system, "value": facility.code}
    ]
    if facility.va_station:
        identifiers.append({"use": "secondary", "system": VA_STATION, "value": facility.va_station})
    return identifiers


def _kind_coding(facility: Facility) -> dict[str, str]:
    return {
        "system": FACILITY_KIND_SYSTEM,
        "code": facility.kind.value,
        "display": FACILITY_KIND_DISPLAY[facility.kind],
    }


def _address(facility: Facility) -> dict[str, Any]:
    address: dict[str, Any] = {"use": "work", "type": "physical", "city": facility.city}
    if facility.state:
        address["state"] = facility.state
    address["country"] = facility.country
    return address


def _time_zone(facility: Facility) -> dict[str, str]:
    return {"url": FACILITY_TIME_ZONE, "valueCode": facility.time_zone}


def organization(facility: Facility, parent_id: str | None) -> dict[str, Any]:
    # Headquarters and markets govern; every other entry delivers care.
    if facility.kind is FacilityKind.HEADQUARTERS:
        hl7_type = ("govt", "Government")
    else:
        hl7_type = ("prov", "Healthcare Provider")
    extensions: list[dict[str, Any]] = [_time_zone(facility)]
    if facility.branch is not None:
        extensions.append(
            {
                "url": SERVICE_BRANCH,
                "valueCoding": {
                    "system": SERVICE_BRANCH_SYSTEM,
                    "code": facility.branch.value,
                    "display": SERVICE_BRANCH_DISPLAY[facility.branch],
                },
            }
        )
    body: dict[str, Any] = {
        "resourceType": "Organization",
        "extension": extensions,
        "identifier": facility_identifiers(facility),
        "active": True,
        "type": [
            {"coding": [_kind_coding(facility)]},
            {"coding": [{"system": ORGANIZATION_TYPE, "code": hl7_type[0], "display": hl7_type[1]}]},
        ],
        "name": facility.name,
    }
    if facility.short_name != facility.name:
        body["alias"] = [facility.short_name]
    body["address"] = [_address(facility)]
    if parent_id is not None and facility.parent_code is not None:
        body["partOf"] = _reference("Organization", parent_id)
    return body


def payer_organization(payer: Payer, parent_id: str) -> dict[str, Any]:
    """The TRICARE program as the payer named by Coverage.payor (https://hl7.org/fhir/R4/coverage.html)."""
    return {
        "resourceType": "Organization",
        "identifier": [{"use": "official", "system": PAYER_ID, "value": payer.code}],
        "active": True,
        "type": [{"coding": [{"system": ORGANIZATION_TYPE, "code": "pay", "display": "Payer"}]}],
        "name": payer.name,
        "alias": ["TRICARE"],
        "partOf": _reference("Organization", parent_id),
    }


def _location_type(facility: Facility) -> dict[str, Any]:
    # HL7 v3 ServiceDeliveryLocationRoleType: MHSP military hospital, HOSP hospital,
    # OF outpatient facility.
    if facility.kind is FacilityKind.MTF_HOSPITAL:
        v3 = ("MHSP", "Military Hospital")
    elif facility.kind in (FacilityKind.VA_MEDICAL_CENTER, FacilityKind.JOINT) or (
        facility.kind is FacilityKind.NETWORK and Service.EMERGENCY in facility.services
    ):
        v3 = ("HOSP", "Hospital")
    else:
        v3 = ("OF", "Outpatient facility")
    return {"coding": [{"system": V3_ROLE_CODE, "code": v3[0], "display": v3[1]}, _kind_coding(facility)]}


def location(facility: Facility, organization_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Location",
        "extension": [_time_zone(facility)],
        "identifier": facility_identifiers(facility),
        "status": "active",
        "name": facility.name,
    }
    if facility.short_name != facility.name:
        body["alias"] = [facility.short_name]
    body |= {
        "mode": "instance",
        "type": [_location_type(facility)],
        "address": _address(facility),
        "physicalType": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                    "code": "bu",
                    "display": "Building",
                }
            ]
        },
        "position": {"longitude": facility.longitude, "latitude": facility.latitude},
        "managingOrganization": _reference("Organization", organization_id, facility.name),
    }
    return body


def healthcare_service_identifier(facility_code: str, service: Service) -> str:
    return f"{facility_code}-{service.value}"


def healthcare_service(
    facility: Facility, service: Service, organization_id: str, location_id: str
) -> dict[str, Any]:
    display, category, service_type = SERVICE_CODES[service]
    return {
        "resourceType": "HealthcareService",
        "identifier": [
            {"system": HEALTHCARE_SERVICE_ID, "value": healthcare_service_identifier(facility.code, service)}
        ],
        "active": True,
        "providedBy": _reference("Organization", organization_id, facility.name),
        "category": [
            {
                "coding": [
                    {"system": SERVICE_CATEGORY, "code": category, "display": _CATEGORY_DISPLAY[category]}
                ]
            }
        ],
        "type": [
            {
                "coding": [
                    {"system": SERVICE_TYPE, "code": service_type, "display": _TYPE_DISPLAY[service_type]},
                    {"system": HEALTHCARE_SERVICE_SYSTEM, "code": service.value, "display": display},
                ],
                "text": display,
            }
        ],
        "location": [_reference("Location", location_id, facility.name)],
        "name": f"{display}, {facility.short_name}",
    }


def practitioner(person: Practitioner) -> dict[str, Any]:
    name: dict[str, Any] = {"use": "official", "family": person.family, "given": [person.given]}
    if person.prefix:
        name["prefix"] = [person.prefix]
    return {
        "resourceType": "Practitioner",
        # Synthetic NPIs: well-formed (Luhn check digit) but assigned by Garrison, not CMS.
        "identifier": [{"use": "official", "system": NPI, "value": person.npi}],
        "active": True,
        "name": [name],
        "gender": person.gender,
    }


def practitioner_role(
    person: Practitioner,
    *,
    facility: Facility,
    practitioner_id: str,
    organization_id: str,
    location_id: str,
    service_ids: list[str],
) -> dict[str, Any]:
    codings = [
        {"system": STAFF_ROLE_SYSTEM, "code": person.role.value, "display": STAFF_ROLE_DISPLAY[person.role]}
    ]
    if person.role in _HL7_ROLE:
        code, display = _HL7_ROLE[person.role]
        codings.append({"system": PRACTITIONER_ROLE, "code": code, "display": display})
    body: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "identifier": [{"system": PRACTITIONER_ROLE_ID, "value": person.key}],
        "active": True,
        "practitioner": _reference("Practitioner", practitioner_id, person.display_name),
        "organization": _reference("Organization", organization_id, facility.name),
        "code": [{"coding": codings, "text": STAFF_ROLE_DISPLAY[person.role]}],
        "location": [_reference("Location", location_id, facility.name)],
    }
    if service_ids:
        body["healthcareService"] = [_reference("HealthcareService", i) for i in service_ids]
    return body
