"""The one registry of numbers the book takes from papers; each family declares its claims in a module here."""

import importlib

from ..registry import FAMILIES
from .core import (
    Claim,
    ClaimResult,
    ClaimsTable,
    all_claims,
    claims_table,
    evaluate,
    get_claim,
    macs_claim,
    model_params,
    params_claim,
    register_claims,
    rounding_tolerance,
)

# Each family's claims register themselves on import: one module per family, lessons/claims/<family>.py.
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")

__all__ = [
    "Claim", "ClaimResult", "ClaimsTable", "all_claims", "claims_table", "evaluate", "get_claim", "macs_claim",
    "model_params", "params_claim", "register_claims", "rounding_tolerance",
]
