"""The limits of a sweep config and the checks behind them: number types that refuse booleans and
non-finite values, how much of a value an error line shows, what a storage root may look like, and
how many cells a grid has, counted before any cell is made.

Pure functions of values (no I/O, except `local_storage_problem`, which only reads the filesystem):
the schema (`w2sweep.config`) calls them while validating, so a bad config fails before any compute.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, PlainValidator

from w2sweep.methods import CEILING, parse_method

MAX_SHOWN = 80  # characters of a value an error line echoes (a 50 MB value was echoed whole)
MAX_FIELD = 200  # characters of a field path (a key of a config is user text too)
MAX_MESSAGE = 400  # characters of what-is-allowed text (validators quote values in it)
MAX_LINES = 20  # error lines printed for one config; the rest are counted in one more line
MAX_NAME = 100  # characters of a sweep name: it names a storage folder under a 255-byte file-name limit
MAX_STORAGE = 1024  # characters of a storage root
MAX_EXAMPLES = 10_000_000  # num_examples and pool sizes: 1e9 synthetic examples tried to allocate 7 GiB
MAX_SEED = 2**32 - 1  # numpy and torch take seeds in [0, 2^32 - 1]
DEFAULT_MAX_CELLS = 100_000  # a grid above `max_cells` is refused before its cells are made

_USERINFO = re.compile(r"(://)[^/@\s]*@")


def clip(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters, saying how long it was: an error line stays one
    readable line whatever the input."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} chars)"


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped (``\\n``): a key or value
    holding a newline must not turn one problem into two lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(value: object) -> str:
    """A value as an error line shows it: a section by its type, anything else by its repr, cut to
    `MAX_SHOWN` characters, with credentials in a URI (``s3://key:secret@bucket``) masked."""
    if isinstance(value, dict | list | tuple):
        return type(value).__name__
    if isinstance(value, str) and len(value) > MAX_SHOWN:  # the repr of a 50 MB string is never built
        return f"{_masked(repr(value[:MAX_SHOWN]))}...({len(value)} chars)"
    return clip(_masked(repr(value)), MAX_SHOWN)


def _masked(text: str) -> str:
    return _USERINFO.sub(r"\1***@", text)


def without_credentials(text: str) -> str:
    """`text` with the user:password of any URI in it masked: for lines quoting a server's error,
    which may name the URL it was called at (MLflow's do)."""
    return _masked(text)


def _not_bool(value: object) -> object:
    """YAML reads `true` as a boolean, and pydantic would read it as 1: a number must be written."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


def Int(**bounds) -> type:  # noqa: N802 - a type
    """An int within `bounds` (pydantic's ge/gt/le/lt) that refuses booleans."""
    return Annotated[int, BeforeValidator(_not_bool), Field(**bounds)]


def Real(**bounds) -> type:  # noqa: N802 - a type
    """A finite float within `bounds` that refuses booleans (`.inf` lr trained to chance silently)."""
    return Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False, **bounds)]


def int_or_auto(*, le: int) -> type:
    """A positive integer up to `le`, or "auto" (resolved when the grid is planned), checked in one
    step so a bad value is one error line (a union would report each branch)."""
    def check(value: object) -> int | str:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= le):
            return value
        raise ValueError(f"expected a positive integer up to {le:,} or 'auto'")

    return Annotated[int | Literal["auto"], PlainValidator(check)]


def no_bool_first(kind: type) -> type:
    """`kind` (a Literal of numbers) refusing booleans, which equal 0 and 1."""
    return Annotated[kind, BeforeValidator(_not_bool)]


def repeated(values: list) -> list:
    """Values listed more than once, in first-seen order (a repeat was dropped silently)."""
    seen, twice = set(), []
    for v in values:
        if v in seen and v not in twice:
            twice.append(v)
        seen.add(v)
    return twice


def storage_problem(uri: str) -> str | None:
    """What is wrong with a storage root, read from its text alone (no server is contacted): the
    checks `w2sweep.storage.Storage.from_uri` makes when a sweep runs, made at validate. The message
    never quotes a URI's credentials."""
    if not uri or len(uri) > MAX_STORAGE:
        return f"expected a local path, file:// or s3://bucket/prefix of 1 to {MAX_STORAGE} characters"
    if any(ord(c) < 32 for c in uri):
        return "control characters (a NUL, a newline) are not allowed in a storage root"
    if "://" not in uri or uri.lower().startswith("file://"):
        path = uri.split("://", 1)[-1]
        if any(len(part.encode()) > 255 for part in path.split("/")):
            return "a folder name is over 255 bytes, more than a filesystem allows"
        if "://" not in uri:
            return None
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return None if parts.netloc in ("", "localhost") else "file:// URIs name a local path; got a host"
    if scheme != "s3":
        return f"unsupported scheme {clip(scheme, 20)!r}; allowed: a local path, file://, s3://"
    if "@" in parts.netloc:
        return "credentials in the URI are refused; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment"
    if parts.query or parts.fragment:
        return "options in the URI ('?...') are not supported; the endpoint comes from AWS_ENDPOINT_URL_S3"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", parts.netloc):
        return "expected s3://bucket/prefix with a bucket name of letters, digits, '.', '_', '-'"
    return None


def local_storage_problem(uri: str) -> str | None:
    """Whether a local storage root can be made a writable directory, found by reading the
    filesystem only (nothing is created): a root that is a file, or under one, fails here at
    validate instead of at run time. None for s3:// roots, which validate never contacts."""
    if "://" in uri:
        if urlsplit(uri).scheme.lower() != "file":
            return None
        uri = urlsplit(uri).path
    path = os.path.abspath(os.path.expanduser(uri))
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        where = "it" if path == os.path.abspath(os.path.expanduser(uri)) else shown(path)
        return f"{where} exists and is not a directory; allowed: a directory, or a path that can be made one"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{shown(path)} is not writable; allowed: a directory this user can write"
    return None


def budget_problem(budget: float, c_weak: float) -> str | None:
    """A budget below the price of one weak label buys no label at any spending fraction: with
    n_oracle = 0 the whole budget buys floor(B / c_weak) weak labels, and n_oracle > 0 needs more."""
    if Fraction(str(budget)) < Fraction(str(c_weak)):  # exact, as `w2sweep.costs.label_counts` computes
        return f"budget {budget:g} buys no label; allowed: at least c_weak={c_weak:g} (one weak label)"
    return None


def count_cells(config) -> int:
    """How many cells `w2sweep.grid.expand_cells` makes of `config` at most, by arithmetic: a grid
    of a million cells grew `run` to 5.7 GB before, so its size is known before any cell is made.
    It counts encoder students' prompt cells, which the grid then skips."""
    weaks = sum(1 if d.weak_label is not None else len(config.weak_supervisors) for d in config.datasets)
    by_sources = {frozenset({"weak"}): 0, frozenset({"oracle"}): 0}
    for n_weak, n_oracle in config.pairs:
        if not n_oracle:
            by_sources[frozenset({"weak"})] += 1
        if not n_weak:
            by_sources[frozenset({"oracle"})] += 1
    per_student = 0
    for name in config.methods:
        if name == CEILING:
            continue
        method = parse_method(name)
        fractions = 1 if method.fixed_fraction is not None else len(config.spending_fractions)
        per_student += len(config.budgets) * (fractions if config.spending_fractions else 0)
        # a one-source method runs the pairs that buy only its source (`w2sweep.methods.budget_splits`)
        per_student += by_sources.get(method.label_sources, len(config.pairs))
    ceiling = 1 if config.ceiling or CEILING in config.methods else 0
    return weaks * len(config.students) * (per_student + ceiling) * len(config.seeds)


WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")  # what wandb accepts in WANDB_MODE


def _wandb_logged_in(environ) -> bool:
    """An API key for online W&B: WANDB_API_KEY, or the netrc entry `wandb login` writes."""
    import netrc
    from urllib.parse import urlsplit as split

    if environ.get("WANDB_API_KEY"):
        return True
    host = split(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    try:
        return netrc.netrc(environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def tracker_problems(trackers: list[str], environ) -> list[str]:
    """What keeps a config's experiment trackers (`w2sweep.trackers`) from logging, read from the
    environment their servers come from: refused when the grid is planned, not hours into a sweep.
    The messages never quote an environment value (a tracking URI may hold a password)."""
    from importlib.util import find_spec

    problems = []
    for name in trackers:
        if find_spec(name) is None:
            problems.append(f"{name!r} is not installed; install it with pip install 'w2sweep[trackers]'")
        elif name == "mlflow" and not environ.get("MLFLOW_TRACKING_URI"):
            problems.append("'mlflow' logs to the server in MLFLOW_TRACKING_URI, which is not set; allowed: "
                            "http(s)://host:port, or sqlite:///path.db for a local store")
        elif name == "wandb":
            mode = environ.get("WANDB_MODE", "online").lower()
            if mode not in WANDB_MODES:
                problems.append(f"WANDB_MODE is {clip(mode, 20)!r}; allowed: {', '.join(WANDB_MODES)}")
            elif mode in ("online", "run", "shared") and not _wandb_logged_in(environ):
                problems.append("'wandb' online needs an API key: set WANDB_API_KEY or run `wandb login`; "
                                "or WANDB_MODE=offline (runs written under WANDB_DIR)")
    return problems


def error_line(field: str, value: object, msg: str) -> str:
    """One bad value as the line the CLI prints: the field, the value (a section by its type) and
    what is allowed. The schema's errors and the planning step's reference checks share it; every
    part is cut to a few hundred characters (`w2sweep.config_checks.shown`), so a huge value stays one line."""
    return f"config error: {clip(field, MAX_FIELD)}: {shown(value)}: {clip(msg, MAX_MESSAGE)}"


def format_error(err: dict) -> str:
    """One pydantic error as an `error_line`."""
    field = clip(".".join(str(p) for p in err["loc"]) or "<top level>", MAX_FIELD)
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a check across fields: the message names them
        return f"config error: <top level>: {clip(msg, MAX_MESSAGE)}"
    if err["type"] == "extra_forbidden":
        return f"config error: {field}: unknown key (not a field of this section)"
    if err["type"] == "missing":
        return f"config error: {field}: required field is missing"
    return error_line(field, err.get("input"), msg)
