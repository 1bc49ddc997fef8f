"""A failed deployment's result code and phase in words. Pure: numbers in, text out.

The deployment report gives ``ResultCode`` as a signed 32-bit decimal (``-2147023436``) and
``Phase`` as a number or, with localized columns, as Intune's own label. On-call needs the
hex form they can search for, the documented name, and a few words of meaning. The table is
deliberately small: only codes whose name and meaning a Microsoft document states, each
with that document in a comment. Anything else is shown as hex with "unknown code"; a
plausible-sounding guess would send on-call down the wrong path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_U32 = 1 << 32
_DECIMAL = re.compile(r"^[+-]?[0-9]{1,20}$")
_HEX = re.compile(r"^0[xX][0-9a-fA-F]{1,16}$")
_FACILITY_WIN32 = 0x8007_0000  # HRESULT_FROM_WIN32: severity bit, facility 7, Win32 code
_MAX_LABEL = 60


@dataclass(frozen=True, slots=True)
class ResultCode:
    name: str
    meaning: str  # lower case, so that it reads inside a sentence


# fmt: off
CODES: dict[int, ResultCode] = {
    # System Error Codes (0-499) (WinError.h): ERROR_SUCCESS, 0, "The operation completed
    # successfully." A failed deployment that reports it gave no error code at all.
    0x0000_0000: ResultCode("ERROR_SUCCESS", "no error code was reported"),
    # System Error Codes (1300-1699): ERROR_TIMEOUT, 1460 (0x5B4), "This operation returned
    # because the timeout period expired." The code of a failed deployment seen in a live
    # tenant's report.
    0x8007_05B4: ResultCode("ERROR_TIMEOUT", "the operation timed out"),
    # System Error Codes (1300-1699): ERROR_INSTALL_FAILURE, 1603 (0x643), "Fatal error
    # during installation."
    0x8007_0643: ResultCode("ERROR_INSTALL_FAILURE", "an installer failed with a fatal error"),
    # System Error Codes (1000-1299): ERROR_CANCELLED, 1223 (0x4C7), "The operation was
    # canceled by the user."
    0x8007_04C7: ResultCode("ERROR_CANCELLED", "the operation was canceled by the user"),
    # System Error Codes (0-499): ERROR_ACCESS_DENIED, 5 (0x5), "Access is denied."
    0x8007_0005: ResultCode("ERROR_ACCESS_DENIED", "access was denied"),
    # Generic COM Error Codes (and COM Error Codes (Generic), Winerror.h): E_FAIL 0x80004005
    # "Unspecified error.", E_ABORT 0x80004004 "Operation aborted.", E_UNEXPECTED
    # 0x8000FFFF "Catastrophic failure."
    0x8000_4005: ResultCode("E_FAIL", "an unspecified error"),
    0x8000_4004: ResultCode("E_ABORT", "the operation was aborted"),
    0x8000_FFFF: ResultCode("E_UNEXPECTED", "a catastrophic failure"),
    # Mobile device enrollment (Windows client management, MDM enrollment error table):
    # MENROLL_E_DEVICE_AUTHORIZATION_ERROR 80180003 "User not allowed to enroll",
    # MENROLL_E_DEVICECAPREACHED 80180013 "User already enrolled in too many devices",
    # MENROLL_E_DEVICENOTSUPPORTED 80180014 "Specific platform (e.g. Windows) or version is
    # not supported", MENROLL_E_USERLICENSE 80180018 "License of user is in bad state and
    # blocking the enrollment".
    0x8018_0003: ResultCode(
        "MENROLL_E_DEVICE_AUTHORIZATION_ERROR", "the user is not allowed to enroll"
    ),
    0x8018_0013: ResultCode(
        "MENROLL_E_DEVICECAPREACHED", "the user has enrolled too many devices"
    ),
    0x8018_0014: ResultCode(
        "MENROLL_E_DEVICENOTSUPPORTED", "this platform or Windows version is not supported"
    ),
    0x8018_0018: ResultCode(
        "MENROLL_E_USERLICENSE", "the user's license is in a bad state and blocks enrollment"
    ),
    # Intune app installation error codes (troubleshoot/mem/intune/app-management/
    # app-install-error-codes): 0x87D1041C, -2016345060, "The application was not detected
    # after installation completed successfully." The page gives no symbolic name, so the
    # name here is that message, shortened.
    0x87D1_041C: ResultCode(
        "Intune: app not detected", "an app installed but its detection rule did not find it"
    ),
}
# fmt: on

# The Phase column of the device preparation deployment report, as Intune labels it
# (memdocs autopilot/device-preparation/reporting-monitoring.md, "Phase - Shows the last
# reported phase that the deployment is at"). The report's numeric phase codes are not
# documented anywhere, so a bare number is shown as such and never mapped to one of these.
PHASES: dict[str, str] = {
    "policy installation": "Policy installation",
    "script installation": "Script installation",
    "app installation": "App installation",
}


def hex_code(code: int) -> str:
    """The 32-bit two's-complement hex of a result code: -2147023436 -> 0x800705B4. A value
    that does not fit in 32 bits is not a result code Windows reports; it is shown as given."""
    if -(1 << 31) <= code < _U32:
        return f"0x{code % _U32:08X}"
    return f"{code} (not a 32-bit code)"


def parse_code(value: int | str | None) -> int | None:
    """A result code as the report or stored evidence holds it: decimal text (signed or not),
    0x-prefixed hex, or an int. None for an absent or unreadable value."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip()
    if _DECIMAL.match(text):
        return int(text)
    if _HEX.match(text):
        return int(text, 16)
    return None


def win32_error(code: int) -> int | None:
    """The Win32 error inside a FACILITY_WIN32 HRESULT (0x8007xxxx), but only for a code the
    table names: an unnamed one is not decoded, so that no half-answer looks like a fact."""
    unsigned = code % _U32 if -(1 << 31) <= code < _U32 else None
    if unsigned is None or unsigned not in CODES:
        return None
    return unsigned & 0xFFFF if unsigned & 0xFFFF_0000 == _FACILITY_WIN32 else None


def phase_name(phase: int | str | None) -> str | None:
    """The phase in Intune's words; a number the documentation does not name shows as
    "phase N (unknown)". A label Intune sent that is not one of the documented three (a
    localized one, say) is Intune's own text and is shown as it came."""
    if phase is None or isinstance(phase, bool):
        return None
    text = str(phase).strip()
    if not text:
        return None
    if text.lower() in PHASES:
        return PHASES[text.lower()]
    if _DECIMAL.match(text):
        return f"phase {int(text)} (unknown)"
    return text[:_MAX_LABEL]


@dataclass(frozen=True, slots=True)
class FailureText:
    """A failed deployment's result code and phase, ready to print."""

    code: int | None
    hex: str | None  # None when the report gave no readable code
    name: str | None  # None for an unknown or absent code
    meaning: str
    phase_name: str | None
    win32: int | None = None

    @property
    def result(self) -> str:
        """The code with its name: "0x800705B4 (ERROR_TIMEOUT)"."""
        if self.hex is None:
            return self.meaning
        return f"{self.hex} ({self.name or 'unknown code'})"

    @property
    def clause(self) -> str:
        """What follows the device's name: "during App installation: 0x800705B4
        (ERROR_TIMEOUT), the operation timed out"."""
        where = f" during {self.phase_name}" if self.phase_name else ""
        if self.name is None:
            return f"{where}: {self.result}"
        return f"{where}: {self.result}, {self.meaning}"

    @property
    def sentence(self) -> str:
        return f"Device preparation failed{self.clause}."


def describe_failure(result_code: int | str | None, phase: int | str | None) -> FailureText:
    """Decode one failure. Accepts the report's text as well as numbers, so callers pass the
    stored value unchanged."""
    code = parse_code(result_code)
    where = phase_name(phase)
    if code is None:
        unreadable = result_code is not None and str(result_code).strip() != ""
        meaning = "the result code could not be read" if unreadable else "no result code"
        return FailureText(None, None, None, meaning, where)
    known = CODES.get(code % _U32) if -(1 << 31) <= code < _U32 else None
    if known is None:
        return FailureText(code, hex_code(code), None, "unknown code", where)
    return FailureText(code, hex_code(code), known.name, known.meaning, where, win32_error(code))
