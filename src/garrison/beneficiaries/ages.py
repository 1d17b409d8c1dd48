"""Age in whole years, as the access and booking rules count it (a child under 13, a teenager
13 to 17, an adult from 18)."""

from __future__ import annotations

from datetime import date


def age_on(birth_date: str | date | None, today: date) -> int | None:
    """Completed years on `today`; None when the birth date is unknown or not a full date (a
    year or year-month alone cannot place a 13th or 18th birthday)."""
    if birth_date is None:
        return None
    if isinstance(birth_date, str):
        if len(birth_date) < 10:
            return None
        try:
            birth_date = date.fromisoformat(birth_date[:10])
        except ValueError:
            return None
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))
