"""SDK-HMAC-SHA256 request signing and verification, as the official Huawei SDK does it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def sdk_date(now: datetime | None = None) -> str:
    """The X-Sdk-Date value for `now` (UTC)."""
    return (now or datetime.now(UTC)).strftime(DATE_FORMAT)


def canonical_uri(path: str) -> str:
    """Each segment percent-encoded once (decoding first), always ending in '/'."""
    segments = [quote(unquote(segment), safe="~") for segment in path.split("/")]
    uri = "/".join(segments)
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    encoded = sorted((quote(key, safe="~"), quote(value, safe="~")) for key, value in pairs)
    return "&".join(f"{key}={value}" for key, value in encoded)


def parse_raw_query(raw_query: str) -> list[tuple[str, str]]:
    """Split a query string as it came off the wire into decoded (key, value) pairs."""
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    """Every header present at signing time whose name has no underscore, lower-cased."""
    return sorted({name.lower() for name in headers if "_" not in name})


def string_to_sign(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_names: list[str],
    body: bytes,
    date: str,
) -> str:
    lowered = {name.lower(): value for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered[name].strip()}\n" for name in signed_names)
    canonical_request = "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            canonical_headers,
            ";".join(signed_names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return f"{ALGORITHM}\n{date}\n{digest}"


def signature(secret_key: str, text: str) -> str:
    return hmac.new(secret_key.encode(), text.encode(), hashlib.sha256).hexdigest()


def authorization_header(
    *,
    access_key: str,
    secret_key: str,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    """The Authorization value for a request whose headers already hold X-Sdk-Date and Host."""
    date = next(value for name, value in headers.items() if name.lower() == "x-sdk-date")
    names = signed_header_names(headers)
    text = string_to_sign(method, path, query, headers, names, body, date)
    return (
        f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature(secret_key, text)}"
    )


@dataclass(frozen=True)
class ParsedAuthorization:
    access_key: str
    signed_headers: list[str]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """Read `SDK-HMAC-SHA256 Access=.., SignedHeaders=.., Signature=..`; None when malformed."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key] = val
    try:
        return ParsedAuthorization(
            access_key=fields["Access"],
            signed_headers=[name for name in fields["SignedHeaders"].split(";") if name],
            signature=fields["Signature"],
        )
    except KeyError:
        return None


def verify(
    *,
    authorization: str,
    secret_key_for: Mapping[str, str],
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
) -> str | None:
    """Check a signed request; answer None when valid, else why it is not.

    `raw_path` is the path as received (still percent-encoded); a query glued to it is split off.
    """
    raw_path, _, glued_query = raw_path.partition("?")
    raw_query = raw_query or glued_query
    parsed = parse_authorization(authorization)
    if parsed is None:
        return "malformed Authorization header"
    secret = secret_key_for.get(parsed.access_key)
    if secret is None:
        return "unknown access key"
    lowered = {name.lower(): value for name, value in headers.items()}
    if "x-sdk-date" not in parsed.signed_headers or "x-sdk-date" not in lowered:
        return "X-Sdk-Date is missing or not signed"
    missing = [name for name in parsed.signed_headers if name not in lowered]
    if missing:
        return f"signed header {missing[0]} is missing"
    text = string_to_sign(
        method,
        raw_path,
        parse_raw_query(raw_query),
        lowered,
        parsed.signed_headers,
        body,
        lowered["x-sdk-date"],
    )
    if not hmac.compare_digest(signature(secret, text), parsed.signature):
        return "signature mismatch"
    return None
