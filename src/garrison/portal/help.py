"""The portal's help center (short task guides) and its first sign-in tour.

Guides are plain data rendered by one template, so every guide has the same shape: what it is
for, a few numbered steps per task, and where to go. The tour is five short server-rendered steps;
finishing or skipping it is remembered per account (`portal_tour`), so the home page offers it
once. It can be taken again from the help center at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, delete, insert, select

from garrison import clock
from garrison.fhir.resource import format_instant
from garrison.identity.passwords import MIN_LENGTH
from garrison.portal.tour_tables import portal_tour

Outcome = Literal["finished", "skipped"]


@dataclass(frozen=True, slots=True)
class Section:
    heading: str
    steps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HelpTopic:
    slug: str
    title: str
    summary: str
    sections: tuple[Section, ...]
    links: tuple[tuple[str, str], ...] = ()  # (label, href)


TOPICS: tuple[HelpTopic, ...] = (
    HelpTopic(
        "sign-in",
        "Sign in and activate your account",
        "First-time activation, passwords, the extra sign-in code and signing out.",
        (
            Section(
                "Activate your account the first time",
                (
                    "Have your DoD ID number (on the back of your ID card), your date of birth and the "
                    "activation code you were given by your clinic or by mail.",
                    "Choose “Activate your account” on the sign-in page and enter all three.",
                    f"Choose a username and a password of at least {MIN_LENGTH} characters. A few "
                    "unrelated words make a strong password that is easy to remember.",
                ),
            ),
            Section(
                "Sign in",
                (
                    "Enter your username and password on the sign-in page.",
                    "If you turned on the extra sign-in code, enter the 6-digit code from your "
                    "authenticator app.",
                    "After a while without activity you are signed out to protect your record; sign in "
                    "again to continue.",
                ),
            ),
            Section(
                "Keep your account safe",
                (
                    "Under “Security” you can see where and when you signed in, end sessions on other "
                    "devices and turn on the extra sign-in code.",
                    "Forgot your password? Choose “Forgot your password?” on the sign-in page.",
                    "Always choose “Sign out” on a shared computer.",
                ),
            ),
        ),
        (("Account security", "/account/security"),),
    ),
    HelpTopic(
        "results",
        "Read your test results",
        "Lab results, what the ranges and flags mean, and charts over time.",
        (
            Section(
                "Find a result",
                (
                    "Open “Health record”, then “Lab results”. Results marked “New” arrived since you "
                    "last looked.",
                    "Each result shows its value, the usual range for the test, and a flag in words "
                    "(High, Low) when it is outside that range.",
                    "Choose a test's name to see all its results as a chart and as a table.",
                ),
            ),
            Section(
                "Understand a result",
                (
                    "A value outside the usual range is not always a problem: your care team looks at "
                    "it together with your health.",
                    "Some sensitive results are shown after your clinician has talked with you.",
                    "Questions about a result? Send a message to your care team.",
                ),
            ),
        ),
        (("Your health record", "/portal/record"),),
    ),
    HelpTopic(
        "messages",
        "Message your care team",
        "Ask a question that is not urgent, and follow the answer.",
        (
            Section(
                "Send a message",
                (
                    "Open “Messages” and choose “Write a message”.",
                    "Choose your primary care team or a clinic where you are seen, write a subject and "
                    "your question, and attach a photo or document if it helps.",
                    "You will see when the message was delivered and read, and when to expect a reply.",
                ),
            ),
            Section(
                "When not to use messages",
                (
                    "In an emergency, call 911 or go to the nearest emergency room.",
                    "Messages are read during clinic hours, not around the clock.",
                ),
            ),
        ),
        (("Messages", "/portal/messages"),),
    ),
    HelpTopic(
        "appointments",
        "Book, change or cancel an appointment",
        "Find an open time, book it, reschedule or cancel, and join a waitlist.",
        (
            Section(
                "Book",
                (
                    "Open “Appointments” and choose “Book an appointment”.",
                    "Pick the facility, the kind of care, and a day and time of day; then choose an open "
                    "time and confirm.",
                    "Primary care is booked with your assigned care team. Specialty care needs a referral "
                    "first.",
                ),
            ),
            Section(
                "Change or cancel",
                (
                    "Open the appointment under “Upcoming”, then choose “Reschedule” or “Cancel”.",
                    "If no time suits you, join the waitlist and you will be told when an earlier time "
                    "opens.",
                    "Reminders come by email or text message before the visit.",
                ),
            ),
        ),
        (("Appointments", "/portal/appointments"),),
    ),
    HelpTopic(
        "prescriptions",
        "Refill or renew a prescription",
        "Ask for a refill or a renewal, pick the pharmacy and follow the request.",
        (
            Section(
                "Ask for a refill or a renewal",
                (
                    "Open “Prescriptions”. Each active prescription shows how many refills are left and "
                    "when it runs out.",
                    "Choose “Request a refill” while refills are left, or “Request a renewal” when none "
                    "are left or the prescription has run out: your prescriber then decides.",
                    "Pick the military pharmacy where you want to collect it, or home delivery by mail, "
                    "and add a note if you need to.",
                ),
            ),
            Section(
                "Follow your request",
                (
                    "Each request has a status page showing what happened and when: sent, accepted, in "
                    "progress, done, or not approved with the reason.",
                    "You get an email or text message when the status changes. It never names the "
                    "medicine; sign in to see the details.",
                    "You can have one open request per medicine at a time.",
                ),
            ),
        ),
        (("Prescriptions", "/portal/prescriptions"),),
    ),
    HelpTopic(
        "family",
        "Family access",
        "Act for your children, see a teenager's limited record, share your record with an adult.",
        (
            Section(
                "Your children",
                (
                    "Parents and guardians can act for children under 13 and see their whole record.",
                    "From 13 to 17 you see a limited record: what a teenager shares with their clinician "
                    "in confidence is not shown to parents.",
                    "Use “Switch record” at the top of any page to choose whose record you see. The page "
                    "always says whose record is open.",
                ),
            ),
            Section(
                "Share your record with another adult",
                (
                    "Under “Family access” you can give another adult access to your record: everything, "
                    "or appointments, messages and refills only, until a date you choose.",
                    "You can take access back at any time; it ends at once.",
                ),
            ),
        ),
        (("Family access", "/portal/family"), ("Switch record", "/portal/switch")),
    ),
    HelpTopic(
        "download",
        "Download your record and connect apps",
        "Take your record with you: a file, a printout, or a health app.",
        (
            Section(
                "Download or print",
                (
                    "Open “Download and apps”. “Download the whole record” saves a file in the FHIR "
                    "format that other health systems and apps can read.",
                    "“Printable summary” shows your health problems, medicines, allergies, "
                    "immunizations and recent results on one page, ready to print.",
                    "A downloaded file is yours to keep safe: anyone who has it can read it.",
                ),
            ),
            Section(
                "Connect a health app",
                (
                    "Apps that support SMART on FHIR can connect to Garrison with your permission. In the "
                    "app, choose Garrison (or enter the address shown on the “Download and apps” page).",
                    "Garrison asks you to sign in and shows what the app wants to see before you agree.",
                    "The “Connected apps” list shows every app you allowed and when it last connected. "
                    "Choose “Disconnect” to stop an app at once.",
                ),
            ),
        ),
        (("Download and apps", "/portal/sharing"),),
    ),
    HelpTopic(
        "privacy",
        "Your privacy and who viewed your record",
        "Who can see your record, and how to check who did.",
        (
            Section(
                "Who can see your record",
                (
                    "Your care teams see your record to care for you. Every look is recorded: who, when, "
                    "and why.",
                    "In an emergency a clinician may open your record without a care relationship "
                    "(“break-the-glass”); that is recorded and reviewed.",
                ),
            ),
            Section(
                "See who viewed it",
                (
                    "Open “Who viewed my record” to see every person, clinic or app that viewed, changed "
                    "or downloaded your record, and any refused attempt.",
                    "Choose the dates to look at; the last 90 days are shown first.",
                    "Something looks wrong? Send a message to your care team and ask for the privacy "
                    "officer.",
                ),
            ),
        ),
        (("Who viewed my record", "/portal/who-viewed"),),
    ),
    HelpTopic(
        "accessibility",
        "Accessibility: using the portal your way",
        "Keyboard, screen readers, zoom and phones.",
        (
            Section(
                "Ways to use the portal",
                (
                    "Every page works with a keyboard alone: Tab moves forward, Shift+Tab back, Enter "
                    "follows a link or presses a button. The first Tab offers “Skip to main content”.",
                    "Screen readers (NVDA, JAWS, VoiceOver, TalkBack) read headings, forms and tables; "
                    "charts always come with a table of the same numbers.",
                    "Zoom up to 400 % or use your phone: pages rearrange into one column.",
                    "Colours are never the only sign: flags and states are also written in words.",
                ),
            ),
            Section(
                "Need help?",
                (
                    "If something does not work with your device or assistive technology, tell your care "
                    "team in a message, or call your clinic.",
                ),
            ),
        ),
    ),
)
TOPIC_BY_SLUG = {topic.slug: topic for topic in TOPICS}


@dataclass(frozen=True, slots=True)
class TourStep:
    number: int
    title: str
    paragraphs: tuple[str, ...]
    link: tuple[str, str] | None = None  # (label, href) to the part of the portal it describes


TOUR: tuple[TourStep, ...] = (
    TourStep(
        1,
        "Welcome to your patient portal",
        (
            "This short tour shows where things are. It takes about a minute; you can skip it and "
            "take it again from Help at any time.",
            "At the top of every page a box says whose record you are looking at: yours, or a family "
            "member's you act for.",
            "In an emergency, call 911 or go to the nearest emergency room. The portal is not watched "
            "around the clock.",
        ),
    ),
    TourStep(
        2,
        "Your health record",
        (
            "“Health record” has your results, medicines, allergies, immunizations, visits and documents.",
            "New results are marked “New”. Choose a test to see a chart of its results over time.",
        ),
        ("Health record", "/portal/record"),
    ),
    TourStep(
        3,
        "Messages and appointments",
        (
            "Use “Messages” for questions that are not urgent; the page says when to expect a reply.",
            "Use “Appointments” to book, reschedule or cancel a visit, or to join a waitlist for an "
            "earlier time.",
        ),
        ("Appointments", "/portal/appointments"),
    ),
    TourStep(
        4,
        "Prescriptions and family",
        (
            "“Prescriptions” lets you ask for a refill or renewal and follow it to the pharmacy.",
            "Parents and guardians use “Switch record” to act for their children. Under “Family access” "
            "you can also share your record with another adult.",
        ),
        ("Prescriptions", "/portal/prescriptions"),
    ),
    TourStep(
        5,
        "Your record, your privacy",
        (
            "“Download and apps” lets you download or print your record and connect health apps.",
            "“Who viewed my record” lists everyone who looked at your record.",
            "“Help” has a short guide for every task, and this tour.",
        ),
        ("Help center", "/portal/help"),
    ),
)


def tour_step(number: int) -> TourStep | None:
    return TOUR[number - 1] if 1 <= number <= len(TOUR) else None


def needs_tour(connection: Connection, account_id: str) -> bool:
    """Whether the home page should offer the first sign-in tour: until the account finishes or
    skips it once."""
    found = connection.execute(
        select(portal_tour.c.account_id).where(portal_tour.c.account_id == account_id)
    ).first()
    return found is None


def finish_tour(connection: Connection, account_id: str, outcome: Outcome, step: int) -> None:
    """Remember that the account finished or skipped the tour (again: the latest is kept)."""
    if outcome not in ("finished", "skipped"):
        raise ValueError(f"unknown tour outcome {outcome!r}")
    step = min(max(step, 0), len(TOUR))
    connection.execute(delete(portal_tour).where(portal_tour.c.account_id == account_id))
    connection.execute(
        insert(portal_tour).values(
            account_id=account_id, outcome=outcome, step=step, recorded=format_instant(clock.now())
        )
    )
