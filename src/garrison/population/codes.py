"""Clinical vocabulary of the generator: public codes for common conditions, drugs, tests, vaccines.

Codes are real and public: SNOMED CT for conditions, procedures, allergies and findings, LOINC for
observations, RxNorm for medications, CVX (CDC) for vaccines, UCUM for units. The displays are
the code systems' own terms, so a terminology-aware reader sees what a clinician would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from garrison.network import Service

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SUBSCRIBER_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
MARITAL_STATUS = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
APPOINTMENT_REASON = "http://terminology.hl7.org/CodeSystem/v2-0276"
MED_REQUEST_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
COURSE_OF_THERAPY = "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy"
CARE_TEAM_CATEGORY = LOINC


@dataclass(frozen=True, slots=True)
class Code:
    system: str
    code: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}

    def concept(self, text: str | None = None) -> dict[str, Any]:
        return {"coding": [self.coding()], "text": text or self.display}


def sct(code: str, display: str) -> Code:
    return Code(SNOMED, code, display)


def rx(code: str, display: str) -> Code:
    return Code(RXNORM, code, display)


def cvx(code: str, display: str) -> Code:
    return Code(CVX, code, display)


# -- conditions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConditionKind:
    """A condition the generator can give someone, and how it is cared for."""

    code: Code
    chronic: bool  # stays active (acute ones resolve within weeks)
    service: Service  # where follow-up visits happen
    medications: tuple[str, ...] = ()  # keys of MEDICATIONS, first line first
    category: str = "problem-list-item"


CONDITIONS: dict[str, ConditionKind] = {
    # Musculoskeletal injuries: the commonest reason service members see a clinician.
    "ankle-sprain": ConditionKind(
        sct("44465007", "Sprain of ankle"),
        False,
        Service.PHYSICAL_THERAPY,
        ("ibuprofen",),
        "encounter-diagnosis",
    ),
    "low-back-pain": ConditionKind(
        sct("279039007", "Low back pain"), True, Service.PHYSICAL_THERAPY, ("naproxen", "cyclobenzaprine")
    ),
    "acl-injury": ConditionKind(
        sct("444470001", "Injury of anterior cruciate ligament"),
        False,
        Service.ORTHOPEDICS,
        ("ibuprofen",),
        "encounter-diagnosis",
    ),
    "rotator-cuff": ConditionKind(
        sct("307731004", "Injury of tendon of the rotator cuff of shoulder"),
        False,
        Service.PHYSICAL_THERAPY,
        ("naproxen",),
        "encounter-diagnosis",
    ),
    "plantar-fasciitis": ConditionKind(
        sct("202882003", "Plantar fasciitis"),
        False,
        Service.PHYSICAL_THERAPY,
        ("ibuprofen",),
        "encounter-diagnosis",
    ),
    "knee-osteoarthritis": ConditionKind(
        sct("239873007", "Osteoarthritis of knee"), True, Service.ORTHOPEDICS, ("naproxen",)
    ),
    # Deployment-related
    "ptsd": ConditionKind(
        sct("47505003", "Posttraumatic stress disorder"), True, Service.BEHAVIORAL_HEALTH, ("sertraline",)
    ),
    "tbi": ConditionKind(sct("127295002", "Traumatic brain injury"), True, Service.PRIMARY_CARE),
    "concussion": ConditionKind(
        sct("62106007", "Concussion with no loss of consciousness"),
        False,
        Service.PRIMARY_CARE,
        (),
        "encounter-diagnosis",
    ),
    "tinnitus": ConditionKind(sct("60862001", "Tinnitus"), True, Service.AUDIOLOGY),
    "hearing-loss": ConditionKind(sct("60700002", "Sensorineural hearing loss"), True, Service.AUDIOLOGY),
    # Behavioral health
    "depression": ConditionKind(
        sct("35489007", "Depressive disorder"), True, Service.BEHAVIORAL_HEALTH, ("sertraline", "fluoxetine")
    ),
    "anxiety": ConditionKind(
        sct("21897009", "Generalized anxiety disorder"), True, Service.BEHAVIORAL_HEALTH, ("sertraline",)
    ),
    "insomnia": ConditionKind(sct("193462001", "Insomnia"), True, Service.PRIMARY_CARE),
    "adhd": ConditionKind(
        sct("406506008", "Attention deficit hyperactivity disorder"), True, Service.BEHAVIORAL_HEALTH
    ),
    # Chronic disease
    "hypertension": ConditionKind(
        sct("59621000", "Essential hypertension"),
        True,
        Service.PRIMARY_CARE,
        ("lisinopril", "amlodipine", "hydrochlorothiazide"),
    ),
    "prediabetes": ConditionKind(sct("15777000", "Prediabetes"), True, Service.PRIMARY_CARE),
    "diabetes": ConditionKind(
        sct("44054006", "Diabetes mellitus type 2"), True, Service.PRIMARY_CARE, ("metformin",)
    ),
    "hyperlipidemia": ConditionKind(
        sct("55822004", "Hyperlipidemia"), True, Service.PRIMARY_CARE, ("simvastatin",)
    ),
    "obesity": ConditionKind(sct("162864005", "Body mass index 30+ - obesity"), True, Service.PRIMARY_CARE),
    "sleep-apnea": ConditionKind(
        sct("78275009", "Obstructive sleep apnea syndrome"), True, Service.PRIMARY_CARE
    ),
    "asthma": ConditionKind(
        sct("195967001", "Asthma"), True, Service.PRIMARY_CARE, ("albuterol", "fluticasone")
    ),
    "allergic-rhinitis": ConditionKind(
        sct("61582004", "Allergic rhinitis"), True, Service.PRIMARY_CARE, ("fexofenadine",)
    ),
    "migraine": ConditionKind(sct("37796009", "Migraine"), True, Service.PRIMARY_CARE, ("ibuprofen",)),
    "coronary-disease": ConditionKind(
        sct("53741008", "Coronary arteriosclerosis"),
        True,
        Service.PRIMARY_CARE,
        ("aspirin", "metoprolol", "nitroglycerin"),
    ),
    "atrial-fibrillation": ConditionKind(
        sct("49436004", "Atrial fibrillation"), True, Service.PRIMARY_CARE, ("warfarin", "metoprolol")
    ),
    "pregnancy": ConditionKind(
        sct("72892002", "Normal pregnancy"), False, Service.WOMENS_HEALTH, (), "encounter-diagnosis"
    ),
    # Acute illness (urgent or sick-call visits)
    "viral-sinusitis": ConditionKind(
        sct("444814009", "Viral sinusitis"), False, Service.PRIMARY_CARE, (), "encounter-diagnosis"
    ),
    "bronchitis": ConditionKind(
        sct("10509002", "Acute bronchitis"), False, Service.PRIMARY_CARE, (), "encounter-diagnosis"
    ),
    "pharyngitis": ConditionKind(
        sct("195662009", "Acute viral pharyngitis"), False, Service.PRIMARY_CARE, (), "encounter-diagnosis"
    ),
    "strep-throat": ConditionKind(
        sct("43878008", "Streptococcal sore throat"),
        False,
        Service.PRIMARY_CARE,
        ("penicillin",),
        "encounter-diagnosis",
    ),
    "otitis-media": ConditionKind(
        sct("65363002", "Otitis media"), False, Service.PEDIATRICS, ("amoxicillin",), "encounter-diagnosis"
    ),
}

ACUTE_ADULT = ("viral-sinusitis", "bronchitis", "pharyngitis", "strep-throat")
ACUTE_CHILD = ("otitis-media", "viral-sinusitis", "pharyngitis", "strep-throat")
TRAINING_INJURIES = ("ankle-sprain", "low-back-pain", "acl-injury", "rotator-cuff", "plantar-fasciitis")


# -- medications -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drug:
    code: Code
    dosage: str  # patient instruction
    per_day: float  # doses a day, for Timing
    continuous: bool  # long-term (chronic) rather than a short course


MEDICATIONS: dict[str, Drug] = {
    "lisinopril": Drug(
        rx("314076", "lisinopril 10 MG Oral Tablet"), "Take 1 tablet by mouth once daily", 1, True
    ),
    "amlodipine": Drug(
        rx("197361", "amlodipine 5 MG Oral Tablet"), "Take 1 tablet by mouth once daily", 1, True
    ),
    "hydrochlorothiazide": Drug(
        rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"), "Take 1 tablet by mouth every morning", 1, True
    ),
    "metformin": Drug(
        rx("861007", "metformin hydrochloride 500 MG Oral Tablet"),
        "Take 1 tablet by mouth twice daily with meals",
        2,
        True,
    ),
    "simvastatin": Drug(
        rx("312961", "simvastatin 20 MG Oral Tablet"), "Take 1 tablet by mouth at bedtime", 1, True
    ),
    "albuterol": Drug(
        rx("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
        "Inhale 2 puffs every 4 to 6 hours as needed for wheezing",
        4,
        True,
    ),
    "fluticasone": Drug(
        rx("895994", "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler"),
        "Inhale 2 puffs twice daily",
        2,
        True,
    ),
    "sertraline": Drug(
        rx("312941", "sertraline 50 MG Oral Tablet"), "Take 1 tablet by mouth once daily", 1, True
    ),
    "fluoxetine": Drug(
        rx("310385", "fluoxetine 20 MG Oral Capsule"), "Take 1 capsule by mouth every morning", 1, True
    ),
    "ibuprofen": Drug(
        rx("197807", "ibuprofen 800 MG Oral Tablet"),
        "Take 1 tablet by mouth every 8 hours as needed for pain, with food",
        3,
        False,
    ),
    "naproxen": Drug(
        rx("849574", "naproxen sodium 220 MG Oral Tablet"),
        "Take 1 tablet by mouth every 12 hours as needed for pain",
        2,
        False,
    ),
    "cyclobenzaprine": Drug(
        rx("828348", "cyclobenzaprine hydrochloride 10 MG Oral Tablet"),
        "Take 1 tablet by mouth at bedtime as needed for muscle spasm",
        1,
        False,
    ),
    "fexofenadine": Drug(
        rx("997488", "fexofenadine hydrochloride 30 MG Oral Tablet"),
        "Take 1 tablet by mouth twice daily as needed",
        2,
        False,
    ),
    "penicillin": Drug(
        rx("834102", "penicillin V potassium 500 MG Oral Tablet"),
        "Take 1 tablet by mouth twice daily for 10 days",
        2,
        False,
    ),
    "amoxicillin": Drug(
        rx("308182", "amoxicillin 250 MG Oral Capsule"),
        "Take 1 capsule by mouth three times daily for 10 days",
        3,
        False,
    ),
    "aspirin": Drug(rx("243670", "aspirin 81 MG Oral Tablet"), "Take 1 tablet by mouth once daily", 1, True),
    "metoprolol": Drug(
        rx("866414", "24 HR metoprolol succinate 100 MG Extended Release Oral Tablet"),
        "Take 1 tablet by mouth once daily",
        1,
        True,
    ),
    "nitroglycerin": Drug(
        rx("705129", "nitroglycerin 0.4 MG/ACTUAT Mucosal Spray"),
        "1 spray under the tongue as needed for chest pain; may repeat every 5 minutes",
        1,
        True,
    ),
    "warfarin": Drug(
        rx("855332", "warfarin sodium 5 MG Oral Tablet"),
        "Take as directed by the anticoagulation clinic",
        1,
        True,
    ),
    "epinephrine": Drug(
        rx("1870230", "NDA020800 0.3 ML epinephrine 1 MG/ML Auto-Injector"),
        "Inject into the outer thigh for a severe allergic reaction; call 911",
        1,
        True,
    ),
}


# -- allergies ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllergyKind:
    code: Code
    category: str  # food | medication | environment | biologic
    criticality: str  # low | high | unable-to-assess
    reaction: Code


_HIVES = sct("247472004", "Wheal")
_RASH = sct("271807003", "Eruption of skin")
_RHINITIS = sct("61582004", "Allergic rhinitis")
_ANAPHYLAXIS = sct("39579001", "Anaphylaxis")

ALLERGIES: tuple[AllergyKind, ...] = (
    AllergyKind(sct("91936005", "Allergy to penicillin"), "medication", "high", _HIVES),
    AllergyKind(sct("91935009", "Allergy to peanuts"), "food", "high", _ANAPHYLAXIS),
    AllergyKind(sct("300913006", "Shellfish allergy"), "food", "high", _HIVES),
    AllergyKind(sct("424213003", "Allergy to bee venom"), "environment", "high", _ANAPHYLAXIS),
    AllergyKind(sct("300916003", "Latex allergy"), "environment", "low", _RASH),
    AllergyKind(sct("418689008", "Allergy to grass pollen"), "environment", "low", _RHINITIS),
    AllergyKind(sct("419263009", "Allergy to tree pollen"), "environment", "low", _RHINITIS),
    AllergyKind(sct("232350006", "House dust mite allergy"), "environment", "low", _RHINITIS),
    AllergyKind(sct("232347008", "Dander (animal) allergy"), "environment", "low", _RHINITIS),
)


# -- observations ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measure:
    """An observation code with its UCUM unit, normal range and decimals shown."""

    code: Code
    unit: str  # UCUM code
    unit_display: str
    low: float | None
    high: float | None
    decimals: int
    category: str  # vital-signs | laboratory | survey


def _loinc(code: str, display: str) -> Code:
    return Code(LOINC, code, display)


BP_PANEL = _loinc("85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = Measure(_loinc("8480-6", "Systolic blood pressure"), "mm[Hg]", "mmHg", 90, 129, 0, "vital-signs")
DIASTOLIC = Measure(_loinc("8462-4", "Diastolic blood pressure"), "mm[Hg]", "mmHg", 60, 79, 0, "vital-signs")
HEART_RATE = Measure(_loinc("8867-4", "Heart rate"), "/min", "/min", 60, 100, 0, "vital-signs")
WEIGHT = Measure(_loinc("29463-7", "Body weight"), "kg", "kg", None, None, 1, "vital-signs")
HEIGHT = Measure(_loinc("8302-2", "Body height"), "cm", "cm", None, None, 1, "vital-signs")
BMI = Measure(
    _loinc("39156-5", "Body mass index (BMI) [Ratio]"), "kg/m2", "kg/m2", 18.5, 24.9, 1, "vital-signs"
)
TEMPERATURE = Measure(_loinc("8310-5", "Body temperature"), "Cel", "C", 36.1, 37.8, 1, "vital-signs")
HBA1C = Measure(
    _loinc("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"), "%", "%", 4.0, 5.6, 1, "laboratory"
)
GLUCOSE = Measure(
    _loinc("2339-0", "Glucose [Mass/volume] in Blood"), "mg/dL", "mg/dL", 70, 99, 0, "laboratory"
)
CHOLESTEROL = Measure(
    _loinc("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma"),
    "mg/dL",
    "mg/dL",
    None,
    199,
    0,
    "laboratory",
)
TRIGLYCERIDES = Measure(
    _loinc("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma"),
    "mg/dL",
    "mg/dL",
    None,
    149,
    0,
    "laboratory",
)
LDL = Measure(
    _loinc("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay"),
    "mg/dL",
    "mg/dL",
    None,
    129,
    0,
    "laboratory",
)
HDL = Measure(
    _loinc("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma"),
    "mg/dL",
    "mg/dL",
    40,
    None,
    0,
    "laboratory",
)
CREATININE = Measure(
    _loinc("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
    "mg/dL",
    "mg/dL",
    0.6,
    1.3,
    2,
    "laboratory",
)
PHQ9 = Measure(
    _loinc("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"),
    "{score}",
    "score",
    None,
    4,
    0,
    "survey",
)
GAD7 = Measure(
    _loinc("70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported]"),
    "{score}",
    "score",
    None,
    4,
    0,
    "survey",
)
SMOKING = _loinc("72166-2", "Tobacco smoking status")
NEVER_SMOKED = sct("266919005", "Never smoked tobacco")
SMOKES_DAILY = sct("449868002", "Smokes tobacco daily")
EX_SMOKER = sct("8517006", "Ex-smoker")

# -- immunizations (CVX, CDC) -----------------------------------------------------------------------

VACCINES: dict[str, Code] = {
    "flu4": cvx("150", "Influenza, split virus, quadrivalent, injectable, preservative free"),
    "flu3": cvx("140", "Influenza, split virus, trivalent, injectable, preservative free"),
    "hepb-adult": cvx("43", "hepatitis B vaccine, adult dosage"),
    "hepa-adult": cvx("52", "hepatitis A vaccine, adult dosage"),
    "tdap": cvx(
        "115", "tetanus toxoid, reduced diphtheria toxoid, and acellular pertussis vaccine, adsorbed"
    ),
    "mmr": cvx("03", "measles, mumps and rubella virus vaccine"),
    "varicella": cvx("21", "varicella virus vaccine"),
    "menacwy": cvx(
        "114",
        "meningococcal polysaccharide (groups A, C, Y and W-135) diphtheria toxoid conjugate vaccine (MCV4P)",
    ),
    "adenovirus": cvx("143", "Adenovirus, type 4 and type 7, live, oral"),
    "ipv": cvx("10", "poliovirus vaccine, inactivated"),
    "24": cvx("24", "Anthrax vaccine, adsorbed, pre-exposure and post-exposure prophylaxis"),
    "75": cvx("75", "Vaccinia (smallpox, mpox) vaccine, live"),
    "41": cvx("41", "typhoid vaccine, parenteral, other than acetone-killed, dried"),
    "134": cvx("134", "Japanese Encephalitis vaccine for intramuscular administration"),
    "184": cvx("184", "Yellow fever vaccine, unspecified formulation"),
    "rabies": cvx("175", "Human Rabies vaccine from human diploid cell culture"),
    "covid": cvx(
        "208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose"
    ),
    "ppsv23": cvx("33", "pneumococcal polysaccharide vaccine, 23 valent"),
    "zoster": cvx("187", "zoster vaccine recombinant"),
    "hepb-child": cvx("08", "hepatitis B vaccine, pediatric or pediatric/adolescent dosage"),
    "dtap": cvx("20", "diphtheria, tetanus toxoids and acellular pertussis vaccine"),
    "dtap-hepb-ipv": cvx("110", "DTaP-hepatitis B and poliovirus vaccine"),
    "dtap-ipv": cvx(
        "130",
        "Diphtheria, tetanus toxoids and acellular pertussis vaccine, and poliovirus vaccine, inactivated",
    ),
    "mmrv": cvx("94", "measles, mumps, rubella, and varicella virus vaccine"),
    "hib": cvx("49", "Haemophilus influenzae type b vaccine, PRP-OMP conjugate"),
    "pcv13": cvx("133", "pneumococcal conjugate vaccine, 13 valent"),
    "rotavirus": cvx("119", "rotavirus, live, monovalent vaccine"),
    "hepa-child": cvx("83", "hepatitis A vaccine, pediatric/adolescent dosage, 2 dose schedule"),
    "hpv": cvx("165", "Human Papillomavirus 9-valent vaccine"),
}

# Recruits receive these at accession (basic training), per the services' immunization program.
ACCESSION_VACCINES = ("hepa-adult", "hepb-adult", "tdap", "mmr", "varicella", "menacwy", "adenovirus", "ipv")

# The childhood schedule (CDC), as (vaccine key, age in months) pairs, with the combination vaccines
# most clinics give (DTaP-HepB-IPV in infancy, DTaP-IPV and MMRV at four).
CHILD_SCHEDULE: tuple[tuple[str, int], ...] = (
    ("hepb-child", 0),
    ("dtap-hepb-ipv", 2), ("hib", 2), ("pcv13", 2), ("rotavirus", 2),
    ("dtap-hepb-ipv", 4), ("hib", 4), ("pcv13", 4), ("rotavirus", 4),
    ("dtap-hepb-ipv", 6), ("pcv13", 6),
    ("mmr", 12), ("varicella", 12), ("hepa-child", 12), ("hib", 12), ("pcv13", 12),
    ("dtap", 15), ("hepa-child", 18),
    ("dtap-ipv", 48), ("mmrv", 48),
    ("tdap", 132), ("menacwy", 132), ("hpv", 132), ("hpv", 144), ("menacwy", 192),
)  # fmt: skip


# -- procedures -------------------------------------------------------------------------------------

PROCEDURES: dict[str, Code] = {
    "physical-therapy": sct("91251008", "Physical therapy procedure"),
    "knee-xray": sct("74016001", "Knee X-ray"),
    "ankle-xray": sct("19490002", "Ankle X-ray"),
    "immobilization": sct("274474001", "Bone immobilization"),
    "depression-screening": sct("171207006", "Depression screening"),
    "psychotherapy": sct("75516001", "Psychotherapy"),
    "spirometry": sct("127783003", "Spirometry"),
    "colonoscopy": sct("73761001", "Colonoscopy"),
    "wisdom-tooth": sct("65546002", "Extraction of wisdom tooth"),
    "medication-reconciliation": sct("430193006", "Medication reconciliation"),
    "pregnancy-ultrasound": sct("169230002", "Ultrasound scan for fetal viability"),
}

# -- encounters --------------------------------------------------------------------------------------

CHECK_UP = sct("185349003", "Encounter for check up")
WELL_CHILD = sct("410620009", "Well child visit")
SYMPTOM_VISIT = sct("185345009", "Encounter for symptom")
PROBLEM_VISIT = sct("185347001", "Encounter for problem")
FOLLOW_UP = sct("390906007", "Follow-up encounter")
EMERGENCY_VISIT = sct("50849002", "Emergency room admission")
PRENATAL_VISIT = sct("424619006", "Prenatal visit")
