"""How S3 requests retry and how their failures read. Settings come from the environment only (see
`w2sweep.storage`); a request that still fails after botocore's retries becomes one `StorageError`
line that says where, what and what to check, and never holds a credential."""

from __future__ import annotations

import os

from w2sweep.storage.base import StorageError

DEFAULT_MAX_ATTEMPTS = 10  # per S3 request; backoff sums to ~25 s at most for connection errors
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0
MAX_POOL_CONNECTIONS = 32  # readers fan out over threads (frontier aggregation)
_CREDENTIALS_HINT = "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
_AUTH_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken",
               "ExpiredToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed", "403"}


def s3_endpoint() -> str | None:
    """The S3 endpoint URL from the environment, or None for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def describe(e: Exception, *, where: str, at: str, bucket: str, attempts: int) -> StorageError:
    """`e`, a botocore error that ended a request at `where` (``storage error: <url>``) sent to `at` (the
    endpoint, in words), as one line. `attempts`: requests sent, for errors that do not count them."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(e, ClientError):
        code, status = error_code(e), http_status(e)
        if code in _AUTH_CODES or status == 403:
            shown = "403 Forbidden" if code == "403" else code
            return StorageError(f"{where}: access denied ({shown}) at {at} — {_CREDENTIALS_HINT}")
        if code == "NoSuchBucket":
            return StorageError(f"{where}: bucket {bucket!r} does not exist at {at}")
        sent = e.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
        message = " ".join(str(e.response.get("Error", {}).get("Message", "")).split())[:200]
        return StorageError(f"{where}: {code} (HTTP {status}) from {at} after {sent} attempt(s)"
                            f"{': ' + message if message else ''}")
    if isinstance(e, NoCredentialsError | PartialCredentialsError):
        return StorageError(f"{where}: no usable credentials — set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                            f"or configure the AWS credential chain")
    return StorageError(f"{where}: cannot reach {at} after {attempts} attempt(s) ({type(e).__name__})")


def error_code(e) -> str:
    """The S3 error code of a botocore ClientError (``NoSuchBucket``, ``AccessDenied``, ...)."""
    return str(e.response.get("Error", {}).get("Code", ""))


def http_status(e) -> int | None:
    """The HTTP status of a botocore ClientError's response."""
    return e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
