"""Garrison's identifier systems, extensions and code systems for military health identity.

Every module that writes or reads military identity (the facility network, the population
generator, the patient index, the portal) uses these names, so a DoD ID written by one is found by
the others. The URIs live under Garrison's own namespace; they name Garrison concepts and are not
claims about any external registry.

How a beneficiary is represented (all plain FHIR R4):
- Patient.identifier: the person's own DoD ID (EDIPI, 10 digits) under `EDIPI`; a VA Integration
  Control Number under `VA_ICN` for veterans; one medical record number per facility under
  `mrn_system(dmis_id)`.
- Patient.extension `SPONSOR` (complex): `edipi` (valueString, the sponsor's DoD ID), `fmp`
  (valueCode from `FMP`, 20 sponsor, 30 spouse, 01-19 children), `patient` (valueReference to the
  sponsor's Patient when the sponsor has a record). A sponsor carries it too, with fmp 20.
- Patient.extension `BENEFICIARY_CATEGORY` (valueCoding from `BENEFICIARY_CATEGORY_SYSTEM`),
  `SERVICE_BRANCH` (valueCoding), `PAY_GRADE` (valueCoding, e.g. E-5), `RANK` (valueString,
  e.g. "SGT"), `UNIT` (valueString).
- RelatedPerson: the sponsor as related to each family member (relationship from HL7 v3
  RoleCode, e.g. SPS spouse, FTH/MTH parent), and later proxies.
- Coverage: the TRICARE plan (type from `TRICARE_PLAN_SYSTEM`), beneficiary = the Patient,
  subscriber = the sponsor, payor = the Defense Health Agency Organization.
- CareTeam + PractitionerRole: the primary care manager (PCM) and team.
- Organization/Location: facilities, identified by DMIS ID (`DMIS_ID`) or VA station number
  (`VA_STATION`).
"""

from __future__ import annotations

from enum import StrEnum

BASE = "http://garrison.health/fhir"

# Identifier systems
EDIPI = f"{BASE}/sid/dod-edipi"
VA_ICN = f"{BASE}/sid/va-icn"
DMIS_ID = f"{BASE}/sid/dmis-id"
VA_STATION = f"{BASE}/sid/va-station-number"
NPI = "http://hl7.org/fhir/sid/us-npi"
# A RelatedPerson carrying this identifier (value: a Garrison account id) lets that account act
# as a proxy for the RelatedPerson's patient while the RelatedPerson is active and in period.
PROXY_ACCOUNT = f"{BASE}/sid/proxy-account"
# On a RelatedPerson an adult made to share their record: how much they share (valueCode, one of
# PROXY_SCOPES in garrison.callers). Guardianships of minors carry no scope: age decides.
PROXY_SCOPE = f"{BASE}/StructureDefinition/proxy-scope"


def mrn_system(facility_code: str) -> str:
    """The medical record number system of one facility (by DMIS ID or VA station number)."""
    return f"{BASE}/sid/mrn/{facility_code}"


# Extensions (https://hl7.org/fhir/R4/extensibility.html)
SPONSOR = f"{BASE}/StructureDefinition/sponsor"
BENEFICIARY_CATEGORY = f"{BASE}/StructureDefinition/beneficiary-category"
SERVICE_BRANCH = f"{BASE}/StructureDefinition/service-branch"
PAY_GRADE = f"{BASE}/StructureDefinition/pay-grade"
RANK = f"{BASE}/StructureDefinition/rank"
UNIT = f"{BASE}/StructureDefinition/unit"
FACILITY_TIME_ZONE = f"{BASE}/StructureDefinition/time-zone"  # valueCode, an IANA zone name

# Code systems
BENEFICIARY_CATEGORY_SYSTEM = f"{BASE}/CodeSystem/beneficiary-category"
SERVICE_BRANCH_SYSTEM = f"{BASE}/CodeSystem/service-branch"
PAY_GRADE_SYSTEM = f"{BASE}/CodeSystem/pay-grade"
FMP = f"{BASE}/CodeSystem/family-member-prefix"
TRICARE_PLAN_SYSTEM = f"{BASE}/CodeSystem/tricare-plan"
FACILITY_KIND_SYSTEM = f"{BASE}/CodeSystem/facility-kind"
V3_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


class BeneficiaryCategory(StrEnum):
    ACTIVE_DUTY = "ADSM"
    ACTIVE_DUTY_FAMILY = "ADFM"
    RETIREE = "RET"
    RETIREE_FAMILY = "RETFM"
    GUARD_RESERVE = "NGR"
    GUARD_RESERVE_FAMILY = "NGRFM"
    VETERAN = "VET"


BENEFICIARY_CATEGORY_DISPLAY: dict[BeneficiaryCategory, str] = {
    BeneficiaryCategory.ACTIVE_DUTY: "Active duty service member",
    BeneficiaryCategory.ACTIVE_DUTY_FAMILY: "Active duty family member",
    BeneficiaryCategory.RETIREE: "Retiree",
    BeneficiaryCategory.RETIREE_FAMILY: "Retiree family member",
    BeneficiaryCategory.GUARD_RESERVE: "National Guard or Reserve member",
    BeneficiaryCategory.GUARD_RESERVE_FAMILY: "National Guard or Reserve family member",
    BeneficiaryCategory.VETERAN: "Veteran",
}


class ServiceBranch(StrEnum):
    ARMY = "USA"
    NAVY = "USN"
    AIR_FORCE = "USAF"
    MARINE_CORPS = "USMC"
    SPACE_FORCE = "USSF"
    COAST_GUARD = "USCG"


SERVICE_BRANCH_DISPLAY: dict[ServiceBranch, str] = {
    ServiceBranch.ARMY: "U.S. Army",
    ServiceBranch.NAVY: "U.S. Navy",
    ServiceBranch.AIR_FORCE: "U.S. Air Force",
    ServiceBranch.MARINE_CORPS: "U.S. Marine Corps",
    ServiceBranch.SPACE_FORCE: "U.S. Space Force",
    ServiceBranch.COAST_GUARD: "U.S. Coast Guard",
}


class TricarePlan(StrEnum):
    PRIME = "PRIME"
    PRIME_REMOTE = "PRIME-REMOTE"
    SELECT = "SELECT"
    FOR_LIFE = "FOR-LIFE"
    RESERVE_SELECT = "RESERVE-SELECT"
    YOUNG_ADULT = "YOUNG-ADULT"  # adult children 21-25 who buy TRICARE Young Adult


TRICARE_PLAN_DISPLAY: dict[TricarePlan, str] = {
    TricarePlan.PRIME: "TRICARE Prime",
    TricarePlan.PRIME_REMOTE: "TRICARE Prime Remote",
    TricarePlan.SELECT: "TRICARE Select",
    TricarePlan.FOR_LIFE: "TRICARE For Life",
    TricarePlan.RESERVE_SELECT: "TRICARE Reserve Select",
    TricarePlan.YOUNG_ADULT: "TRICARE Young Adult",
}

SPONSOR_FMP = "20"
SPOUSE_FMP = "30"


def child_fmp(birth_order: int) -> str:
    """Children are 01-19 in birth order."""
    if not 1 <= birth_order <= 19:
        raise ValueError("family member prefixes for children run from 01 to 19")
    return f"{birth_order:02d}"


class FacilityKind(StrEnum):
    MTF_HOSPITAL = "mtf-hospital"  # military treatment facility: medical center or hospital
    MTF_CLINIC = "mtf-clinic"
    MTF_DENTAL = "mtf-dental"
    VA_MEDICAL_CENTER = "vamc"
    VA_CLINIC = "va-cboc"  # community-based outpatient clinic
    JOINT = "joint-fhcc"  # joint DoD/VA federal health care center
    NETWORK = "tricare-network"  # civilian TRICARE network provider
    HEADQUARTERS = "headquarters"  # DHA, markets, service medical commands


# The facility network (garrison.network). Civilian TRICARE network providers have no DMIS ID;
# Garrison numbers them itself. Services and staff roles are identified per facility so that
# loading the network twice finds the same resources (conditional update by identifier).
TRICARE_NETWORK_PROVIDER = f"{BASE}/sid/tricare-network-provider"
PAYER_ID = f"{BASE}/sid/payer"
HEALTHCARE_SERVICE_ID = f"{BASE}/sid/healthcare-service"  # value: <facility code>-<service>
PRACTITIONER_ROLE_ID = f"{BASE}/sid/practitioner-role"  # value: <facility code>-<nn>
HEALTHCARE_SERVICE_SYSTEM = f"{BASE}/CodeSystem/healthcare-service"
STAFF_ROLE_SYSTEM = f"{BASE}/CodeSystem/staff-role"

# The patient index (garrison.empi): work-queue Task codes. A possible-duplicate Task asks a
# health-information manager to review two Patient records that may be one person.
TASK_CODE_SYSTEM = f"{BASE}/CodeSystem/task-code"
POSSIBLE_DUPLICATE_TASK = "possible-duplicate"
