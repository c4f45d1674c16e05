"""A/B variant assignment: a stable hash of (experiment salt, user_id) picks a variant by its share.

The hash is SHA-256 (never Python's per-process ``hash()``), so every worker and every restart puts
a user in the same variant; changing the salt reshuffles everyone, which is how a new experiment
starts. Variants are sorted by name before their shares are laid out on [0, 1), so the order of the
keys in ``STREAMREC_VARIANTS`` does not matter.

``STREAMREC_VARIANTS`` is a JSON object from variant name to either a share or an arm::

    {"control": 0.5, "treatment": {"share": 0.5, "mmr_lambda": 0.7, "explore_epsilon": 0.1}}

An arm names the ranker (``null`` = the configured ranker, ``"fallback"`` = the fallback blend), a
version policy (``"latest"`` or a version number), and its diversity lambda and exploration
epsilon (``null`` = the global ``STREAMREC_MMR_LAMBDA`` / ``STREAMREC_EXPLORE_EPSILON``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FALLBACK_RANKER = "fallback"
LATEST = "latest"
MAX_VARIANTS = 8  # variant names are a Prometheus label: few and bounded
SHARE_TOLERANCE = 1e-6
VariantName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class Arm(BaseModel):
    """What a variant serves. ``None`` fields take the global settings."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    ranker: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    version: Annotated[str, Field(pattern=r"^(latest|[1-9][0-9]{0,8})$")] = LATEST
    mmr_lambda: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = None
    explore_epsilon: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = None

    @property
    def uses_fallback(self) -> bool:
        return self.ranker == FALLBACK_RANKER


class Variant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: VariantName
    share: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
    arm: Arm = Arm()


class Experiment(BaseModel):
    """Validated variants, sorted by name; shares sum to 1."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    salt: Annotated[str, Field(min_length=1, max_length=64)]
    variants: tuple[Variant, ...]

    @model_validator(mode="after")
    def _valid(self) -> Experiment:
        check_variants(self.variants)
        if list(self.variants) != sorted(self.variants, key=lambda v: v.name):
            raise ValueError("variants must be sorted by name (parse_variants does this)")
        return self

    def assign(self, user_id: str) -> Variant:
        point = bucket(self.salt, user_id)
        upper = 0.0
        for variant in self.variants:
            upper += variant.share
            if point < upper:
                return variant
        return self.variants[-1]  # the sum may fall short of 1 by rounding


DEFAULT_VARIANTS: tuple[Variant, ...] = (Variant(name="control", share=1.0),)


def bucket(salt: str, user_id: str) -> float:
    """The user's point in [0, 1): the first 8 bytes of SHA-256(salt, NUL, user_id), big-endian, / 2**64."""
    digest = hashlib.sha256(salt.encode("utf-8") + b"\x00" + user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_variants(variants: tuple[Variant, ...]) -> None:
    if not variants:
        raise ValueError("at least one variant is needed")
    if len(variants) > MAX_VARIANTS:
        raise ValueError(f"{len(variants)} variants; at most {MAX_VARIANTS} are allowed")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names repeat: {names}")
    total = math.fsum(v.share for v in variants)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise ValueError(f"variant shares sum to {total:g}, not 1")


def parse_variants(raw: str | Mapping[str, Any] | tuple[Variant, ...] | None) -> tuple[Variant, ...]:
    """Parse ``STREAMREC_VARIANTS`` (JSON text or an already decoded object) into sorted variants.

    An empty value means one ``control`` variant with every share. Raises ``ValueError`` with a
    readable message on anything invalid.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return DEFAULT_VARIANTS
    if isinstance(raw, tuple):
        check_variants(raw)
        return tuple(sorted(raw, key=lambda v: v.name))
    if isinstance(raw, str):
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"variants are not valid JSON: {exc}") from None
    else:
        body = raw
    if not isinstance(body, Mapping) or not body:
        raise ValueError('variants must be a non-empty JSON object, e.g. {"control": 0.5, "treatment": 0.5}')
    variants = []
    for name, spec in body.items():
        try:
            if isinstance(spec, int | float) and not isinstance(spec, bool):
                variants.append(Variant(name=name, share=float(spec)))
            elif isinstance(spec, Mapping):
                fields = dict(spec)
                share = fields.pop("share", None)
                variants.append(Variant(name=name, share=share, arm=Arm.model_validate(fields)))
            else:
                raise ValueError(f"variant {name!r}: expected a share or an object, got {spec!r}")
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:3]
            )
            raise ValueError(f"variant {name!r}: {detail}") from None
    out = tuple(sorted(variants, key=lambda v: v.name))
    check_variants(out)
    return out
