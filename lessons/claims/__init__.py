"""The one registry of numbers the book takes from papers; each family declares its claims in a module here."""

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

# Each family's claims register themselves on import (one module per family, like lessons/<family>.py).
from . import mobilevit  # noqa: E402,F401
from . import poolformer  # noqa: E402,F401
from . import topformer  # noqa: E402,F401
from . import seaformer  # noqa: E402,F401
from . import pp_mobileseg  # noqa: E402,F401
from . import hrvit  # noqa: E402,F401

__all__ = [
    "Claim", "ClaimResult", "ClaimsTable", "all_claims", "claims_table", "evaluate", "get_claim", "macs_claim",
    "model_params", "params_claim", "register_claims", "rounding_tolerance",
]
