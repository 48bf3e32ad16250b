"""Coded concepts (PS3.3 8.8 Code Sequence Macro) and the codes cloudfilm's plugins use most.

A :class:`Code` is the JSON-friendly twin of ``pydicom.sr.coding.Code``: a value, the coding scheme
designator (``SCT`` for SNOMED CT, ``RADLEX``, ``DCM``, ``UCUM``, ``LN`` ...) and a meaning.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ABSENT",
    "BELOW_OPERATING_POINT",
    "DIAMETER",
    "FINDING",
    "HIGH_DENSITY_LESION",
    "LESION",
    "MASS",
    "MORPHOLOGICALLY_ABNORMAL_STRUCTURE",
    "NODULE",
    "OPERATING_POINT",
    "PRESENT",
    "PROBABILITY",
    "UCUM_MM",
    "UCUM_MM3",
    "UCUM_NO_UNITS",
    "UCUM_PERCENT",
    "VOLUME",
    "Code",
]


class Code(BaseModel):
    """A coded concept: ``Code(value="27925004", scheme="SCT", meaning="Nodule")``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: str = Field(min_length=1, max_length=256, description="Code Value (0008,0100) or a long/URN code value")
    scheme: str = Field(
        min_length=1, max_length=16, description="Coding Scheme Designator (0008,0102): SCT, RADLEX, DCM, UCUM, LN ..."
    )
    meaning: str = Field(min_length=1, max_length=64, description="Code Meaning (0008,0104)")
    scheme_version: str | None = Field(default=None, max_length=16, description="Coding Scheme Version (0008,0103)")

    def __str__(self) -> str:
        return f"({self.value}, {self.scheme}, {self.meaning!r})"


# Findings (SNOMED CT; PS3.16 CID 6102, 7151, 6008)
LESION = Code(value="52988006", scheme="SCT", meaning="Lesion")
NODULE = Code(value="27925004", scheme="SCT", meaning="Nodule")
MASS = Code(value="4147007", scheme="SCT", meaning="Mass")
HIGH_DENSITY_LESION = Code(value="129744006", scheme="SCT", meaning="High density lesion")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code(value="49755003", scheme="SCT", meaning="Morphologically Abnormal Structure")
PRESENT = Code(value="52101004", scheme="SCT", meaning="Present")
ABSENT = Code(value="272519000", scheme="SCT", meaning="Absent")
FINDING = Code(value="121071", scheme="DCM", meaning="Finding")

# The archive's local coding scheme (PS3.16 8.2, private designator): a finding a plugin shows for
# review although its probability lies under the plugin's operating point
OPERATING_POINT = Code(value="OPERATING-POINT", scheme="99CLOUDFILM", meaning="Relation to operating point")
BELOW_OPERATING_POINT = Code(value="BELOW-OP-POINT", scheme="99CLOUDFILM", meaning="Below operating point")

# Measurement names (CID 7469 / DCM)
DIAMETER = Code(value="81827009", scheme="SCT", meaning="Diameter")
VOLUME = Code(value="118565006", scheme="SCT", meaning="Volume")
PROBABILITY = Code(value="122157", scheme="DCM", meaning="Probability")

# Units (UCUM, CID 7181)
UCUM_MM = Code(value="mm", scheme="UCUM", meaning="millimeter")
UCUM_MM3 = Code(value="mm3", scheme="UCUM", meaning="cubic millimeter")
UCUM_NO_UNITS = Code(value="1", scheme="UCUM", meaning="no units")
UCUM_PERCENT = Code(value="%", scheme="UCUM", meaning="Percent")
