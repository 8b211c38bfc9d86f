"""Benchmark options: one pydantic model per benchmark (``Benchmark.Options``), validated at construction.

Values arrive as strings from ``--option BENCH.KEY=VALUE`` or as JSON values from a stored result document;
pydantic's lax mode reads ints, floats and booleans from strings (``"true"``/``"false"``, ``"1"``/``"0"``,
``yes``/``no``, ``on``/``off``). List options (``bbq.categories=Age,Gender_identity``, ``all``) stay the string
the user gave, so a result document records exactly what was asked for; the model checks every name, and
the benchmark splits the list with :func:`split_names`.

Shared pieces live with what they describe: decoding (``DecodingOptions``) in ``generation.py``, classifier
settings in ``harm.py``, the choice policy here (``ChoicePolicyOptions``).

A subclass changes an inherited default without re-declaring the field (its type and checks stay in one place)::

    class Options(DecodingOptions, defaults={"max_new_tokens": 150}):
        system: Literal["untargeted", "benign", "targeted"] = "untargeted"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError


class BenchmarkOptions(BaseModel):
    """Base of every benchmark's ``Options``: unknown keys are refused, values are immutable, no NaN/inf."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __init_subclass__(cls, defaults: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(cls, defaults: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if not defaults:
            return
        fields = cls.model_fields
        unknown = sorted(set(defaults) - set(fields))
        if unknown:
            raise TypeError(f"{cls.__qualname__}: defaults for fields it does not have: {', '.join(unknown)}")
        for key, value in defaults.items():
            fields[key].default = value  # this class's own copy of the inherited field
        cls.model_rebuild(force=True)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _what(err: Any) -> str:
    """What a value must be, from one pydantic error."""
    kind, ctx, msg = err["type"], err.get("ctx") or {}, err["msg"]
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind == "finite_number":
        return "must be a finite number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false (also 1/0, yes/no, on/off)"
    if kind in ("string_type",):
        return "must be text"
    for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if k in ctx and kind.startswith(("greater", "less")):
            return f"must be {op} {ctx[k]}"
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if msg.startswith("Input should be "):
        return "must be " + msg[len("Input should be "):]
    return msg


def parse(model: type[BenchmarkOptions], bench: str, given: Mapping[str, Any] | BenchmarkOptions | None) -> BenchmarkOptions:
    """Validate ``given`` (strings from the command line, or stored JSON values) into ``model``.

    An unknown key or a bad value is a :class:`ConfigError` naming ``--option BENCH.KEY``, the value and what
    is accepted."""
    if isinstance(given, model):
        return given
    if isinstance(given, BenchmarkOptions):
        given = given.model_dump()
    given = dict(given or {})
    valid = sorted(model.model_fields)
    for key in given:
        if key not in model.model_fields:
            raise ConfigError(f"--option {bench}.{key}: unknown option for {bench}; valid: {', '.join(valid) or 'none'}")
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        if err["loc"]:
            key = str(err["loc"][0])
            value = given.get(key, model.model_fields[key].default if key in model.model_fields else err.get("input"))
            raise ConfigError(f"--option {bench}.{key}={_shown(value)}: {_what(err)}") from None
        raise ConfigError(f"--option {bench}: {_what(err)}") from None


# ------------------------------------------------------------------------------------------ name lists
def split_names(spec: str, known: Sequence[str], allow_all: bool = True) -> list[str]:
    """``all`` (every known name, when allowed) or the comma-separated names, stripped, empty parts dropped,
    order kept; raises ValueError naming the unknown ones."""
    spec = str(spec).strip()
    if allow_all and spec == "all":
        return list(known)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [s for s in names if s not in known]
    if bad or not names:
        raise ValueError(f"unknown {', '.join(bad) or '(empty)'}")
    return names


def names_option(known: Sequence[str], allow_all: bool = True, hint: str | None = None) -> Any:
    """The type of a list option: a string (kept as given) of comma-separated names from ``known`` or ``all``."""
    accepted = hint or ("'all' or " if allow_all else "") + f"a comma-separated list of {', '.join(known)}"

    def check(v: str) -> str:
        try:
            split_names(v, known, allow_all)
        except ValueError as exc:
            raise ValueError(f"{exc}; use {accepted}") from None
        return v

    return Annotated[str, AfterValidator(check)]


# ------------------------------------------------------------------------------------------ shared models
class ChoicePolicyOptions(BenchmarkOptions):
    """How an answer label's token variants are merged (engine.requests.ChoiceRequest.policy)."""

    policy: Literal["case_space", "space", "exact"] = "case_space"
