"""What error reports mask: one-time codes, but not the digits of an identifier."""

from __future__ import annotations

import uuid

from bem.kit.errortracking import REPORTED_TEXT
from bem.kit.scrub import MASK, mask_text


def test_codes_are_masked_and_identifiers_are_not() -> None:
    assert mask_text("the code 482913 was wrong", REPORTED_TEXT) == f"the code {MASK} was wrong"
    job_id = str(uuid.UUID("12345678-54ab-4b8a-b91f-bc68a96a32a1"))  # an all-digit first group
    assert mask_text(f"job {job_id} failed", REPORTED_TEXT) == f"job {job_id} failed"
    assert mask_text("12345678-54ab", REPORTED_TEXT) == "12345678-54ab"
