"""One storage layer for a sweep root: a local directory (plain path or ``file://``) or an S3 prefix
(``s3://bucket/prefix`` on AWS or any S3-compatible server: MinIO, R2, SeaweedFS, ...).

Keys handed to `Storage` methods are relative to the root (e.g. ``"demo/cells/ab12.json"``).
A cell result is written with `write_once`: a reader sees nothing or the whole object, and a second
writer of the same key loses (`AlreadyExists`) instead of overwriting.

S3 settings come from the environment only, never from the sweep YAML:
- endpoint: ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else AWS itself;
- credentials: the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles,
  instance roles); they are never passed explicitly, so they are never pickled, logged or written;
- region: ``AWS_REGION``/``AWS_DEFAULT_REGION`` or the AWS config, default ``us-east-1``;
- attempts per request: ``AWS_MAX_ATTEMPTS`` (default 10), botocore's "standard" retry mode
  (exponential backoff with jitter on throttling, 5xx and connection errors).

Objects go through boto3 (conditional writes, retries, clear errors); Ray Tune gets a pyarrow
``S3FileSystem`` on the same endpoint and root (`Storage.filesystem`).
"""

from __future__ import annotations

import os
import posixpath
import threading
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import pyarrow.fs as pafs

DEFAULT_MAX_ATTEMPTS = 10  # per S3 request; backoff sums to ~25 s at most for connection errors
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0
MAX_POOL_CONNECTIONS = 32  # readers fan out over threads (frontier aggregation)
_CREDENTIALS_HINT = "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
_AUTH_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken",
               "ExpiredToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed", "403"}


def in_storage_env(env: dict[str, str], fn, /, *args, **kwargs):
    """Call `fn` in a worker after putting the driver's storage settings into its environment. (Here,
    not in `w2sweep.sweep`: a Ray task worker unpickling it then imports this module, not Ray Tune.)"""
    os.environ.update(env)
    return fn(*args, **kwargs)


class StorageError(RuntimeError):
    """A storage operation failed for good. ``str()`` is one line: where, what went wrong, and what to
    check. It never holds a credential."""


class AlreadyExists(FileExistsError):
    """`write_once` found the object already there: another attempt of the same cell won."""


def s3_endpoint() -> str | None:
    """The S3 endpoint URL from the environment, or None for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class Storage:
    """A sweep root. Build one with `Storage.from_uri`; it pickles (for Ray tasks) without credentials."""

    uri: str  # the root as given (an absolute path for local roots)
    root: str  # the root as a path inside `filesystem`

    @staticmethod
    def from_uri(uri: str, *, max_attempts: int | None = None) -> Storage:
        """A plain path or ``file://`` URI is a local directory (created if missing); ``s3://bucket/prefix``
        is an S3 prefix. `max_attempts` (S3 only) overrides ``AWS_MAX_ATTEMPTS``."""
        if "://" not in uri:
            return LocalStorage(uri)
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise StorageError(f"storage error: {uri}: file:// URIs name a local path; got host "
                                   f"{parts.netloc!r}")
            return LocalStorage(parts.path)
        if scheme == "s3":
            if "@" in parts.netloc:
                # Never echo the URI: the part before '@' is a credential.
                raise StorageError(f"storage error: s3://{parts.netloc.rpartition('@')[2]}: credentials in "
                                   f"the URI are refused; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the "
                                   f"environment")
            if parts.query or parts.fragment:
                raise StorageError(f"storage error: s3://{parts.netloc}{parts.path}: options in the URI "
                                   f"('?...') are not supported; the endpoint comes from AWS_ENDPOINT_URL_S3 "
                                   f"or AWS_ENDPOINT_URL")
            if not parts.netloc:
                raise StorageError(f"storage error: {uri}: no bucket; expected s3://bucket/prefix")
            return S3Storage(parts.netloc, parts.path.strip("/"), max_attempts=max_attempts)
        raise StorageError(f"storage error: {scheme}://{parts.netloc}{parts.path}: unsupported scheme "
                           f"{scheme!r}; allowed: a local path, file://, s3://")

    # ---- the interface; keys are relative to the root -----------------------------------------

    @property
    def is_local(self) -> bool:
        return False

    @property
    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem on which `path(key)` names the same object (for Ray Tune)."""
        raise NotImplementedError

    def path(self, key: str) -> str:
        """`key` as a path inside `filesystem`."""
        return posixpath.join(self.root, key) if key else self.root

    def url(self, key: str = "") -> str:
        """`key` as something a person can paste: a local path or an ``s3://`` URI."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        """The whole object; FileNotFoundError if there is none."""
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace `key` atomically: a reader sees the old or the new object, never a part."""
        raise NotImplementedError

    def write_once(self, key: str, data: bytes) -> None:
        """Create `key` holding `data`, or raise `AlreadyExists`; never a partial object."""
        raise NotImplementedError

    def compute_once(self, key: str, make: Callable[[], bytes]) -> None:
        """Store `make()` under `key` unless an object is there already: what is computed once per key
        (weak labels, features). Safe to call concurrently: the first writer wins."""
        if self.exists(key):
            return
        try:
            self.write_once(key, make())
        except AlreadyExists:
            pass

    def delete(self, key: str) -> None:
        """Remove `key`; no error if it is not there."""
        raise NotImplementedError

    def list_modified(self, prefix: str, *, suffix: str = "") -> dict[str, float]:
        """Key -> last-modified time (seconds since the epoch) of the objects directly under `prefix`."""
        raise NotImplementedError

    def list(self, prefix: str, *, suffix: str = "") -> list[str]:
        """Keys (relative to the root) of the objects directly under `prefix`, sorted."""
        return sorted(self.list_modified(prefix, suffix=suffix))

    def check(self) -> None:
        """Raise `StorageError` (one line) unless the root is writable: writes and deletes a probe
        object. Cheap; meant to run before any compute."""
        key = f".w2sweep-check-{uuid.uuid4().hex}"
        self.write_bytes(key, b"ok")
        self.delete(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url()!r})"


def _is_listed(name: str, suffix: str) -> bool:
    return name.endswith(suffix) and ".tmp-" not in name and not name.startswith(".w2sweep-check-")


class LocalStorage(Storage):
    """A local directory through pyarrow's LocalFileSystem. `write_once` publishes with link(2), which
    fails if the target exists: exclusive and atomic on POSIX."""

    def __init__(self, path: str):
        self.uri = self.root = os.path.abspath(os.path.expanduser(path))
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise StorageError(f"storage error: {self.root}: cannot create the directory ({e.strerror})") from None
        self._fs = pafs.LocalFileSystem()

    @property
    def is_local(self) -> bool:
        return True

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._fs

    def url(self, key: str = "") -> str:
        return self.path(key)

    def exists(self, key: str) -> bool:
        return os.path.exists(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        with open(self.path(key), "rb") as f:
            return f.read()

    def _write_temp(self, target: str, data: bytes) -> str:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        tmp = self._write_temp(target, data)
        os.replace(tmp, target)

    def write_once(self, key: str, data: bytes) -> None:
        target = self.path(key)
        tmp = self._write_temp(target, data)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise AlreadyExists(key) from None
        finally:
            os.unlink(tmp)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass

    def list_modified(self, prefix: str, *, suffix: str = "") -> dict[str, float]:
        try:
            entries = list(os.scandir(self.path(prefix)))
        except FileNotFoundError:
            return {}
        return {posixpath.join(prefix, e.name): e.stat().st_mtime for e in entries
                if e.is_file() and _is_listed(e.name, suffix)}

    def check(self) -> None:
        try:
            super().check()
        except OSError as e:
            raise StorageError(f"storage error: {self.root}: not writable ({e.strerror or e})") from None


class S3Storage(Storage):
    """An S3 prefix. Objects go through boto3 with botocore's standard retries; `write_once` is
    ``put_object(IfNoneMatch="*")``, so of two writers of a key exactly one succeeds. A single PUT is
    atomic on S3: a failed or cut-off upload leaves no object. boto3 clients are made lazily per
    process and are not pickled."""

    def __init__(self, bucket: str, prefix: str, *, max_attempts: int | None = None):
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.root = f"{bucket}/{self.prefix}".rstrip("/")
        self.endpoint = s3_endpoint()
        self.region = boto3.session.Session().region_name or "us-east-1"
        self.max_attempts = int(max_attempts or os.environ.get("AWS_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
        self._init_local_state()

    def _init_local_state(self) -> None:
        self._lock = threading.Lock()
        self._client = None
        self._fs = None
        self._attempts = threading.local()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_client", "_fs", "_attempts")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_local_state()

    # ---- clients ------------------------------------------------------------------------------

    @property
    def client(self):
        """A boto3 S3 client for this process (thread-safe, made on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self):
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
            max_pool_connections=MAX_POOL_CONNECTIONS,
            s3={"addressing_style": "path"} if self.endpoint else None,
        )
        client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, region_name=self.region,
                                                config=config)
        client.meta.events.register("before-send.s3", self._count_attempt)
        return client

    def _count_attempt(self, **_) -> None:
        self._attempts.count = getattr(self._attempts, "count", 0) + 1

    @property
    def filesystem(self) -> pafs.FileSystem:
        """pyarrow's S3FileSystem on the same endpoint and region; credentials from the same chain
        (never passed, so never pickled)."""
        if self._fs is None:
            scheme = "http" if (self.endpoint or "").startswith("http://") else "https"
            self._fs = pafs.S3FileSystem(
                endpoint_override=self.endpoint, scheme=scheme, region=self.region,
                connect_timeout=CONNECT_TIMEOUT_S, request_timeout=READ_TIMEOUT_S,
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
                allow_bucket_creation=False, allow_bucket_deletion=False,
            )
        return self._fs

    # ---- errors -------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return posixpath.join(self.prefix, key) if self.prefix else key

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}".rstrip("/")

    def _call(self, key: str, method: str, **kwargs):
        """``client.<method>(**kwargs)``; botocore retries transient failures, and what still fails becomes
        one `StorageError` line. ClientErrors the caller must interpret are re-raised as they are."""
        from botocore.exceptions import BotoCoreError, ClientError

        self._attempts.count = 0
        try:
            return getattr(self.client, method)(**kwargs)
        except ClientError as e:
            if _status(e) in (404, 409, 412, 501) and _code(e) != "NoSuchBucket":
                raise
            raise self._error(key, e) from None
        except BotoCoreError as e:
            raise self._error(key, e) from None

    def _error(self, key: str, e: Exception) -> StorageError:
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

        where = f"storage error: {self.url(key)}"
        at = self.endpoint or f"AWS S3 ({self.region})"
        if isinstance(e, ClientError):
            code, status = _code(e), _status(e)
            if code in _AUTH_CODES or status == 403:
                shown = "403 Forbidden" if code == "403" else code
                return StorageError(f"{where}: access denied ({shown}) at {at} — {_CREDENTIALS_HINT}")
            if code == "NoSuchBucket":
                return StorageError(f"{where}: bucket {self.bucket!r} does not exist at {at}")
            attempts = e.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
            message = " ".join(str(e.response.get("Error", {}).get("Message", "")).split())[:200]
            return StorageError(f"{where}: {code} (HTTP {status}) from {at} after {attempts} attempt(s)"
                                f"{': ' + message if message else ''}")
        if isinstance(e, NoCredentialsError | PartialCredentialsError):
            return StorageError(f"{where}: no usable credentials — set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                                f"or configure the AWS credential chain")
        attempts = getattr(self._attempts, "count", 0)
        return StorageError(f"{where}: cannot reach {at} after {attempts} attempt(s) ({type(e).__name__})")

    # ---- the interface ------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call(key, "head_object", Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if _status(e) == 404:
                return False
            raise self._error(key, e) from None
        return True

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._call(key, "get_object", Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read()
        except ClientError as e:
            if _status(e) == 404:
                raise FileNotFoundError(self.url(key)) from None
            raise self._error(key, e) from None
        except BotoCoreError as e:  # the connection broke while the body streamed
            raise self._error(key, e) from None

    def write_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call(key, "put_object", Bucket=self.bucket, Key=self._key(key), Body=data)
        except ClientError as e:
            raise self._error(key, e) from None

    def write_once(self, key: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        # A 409 means a concurrent conditional write of the same key was in flight; S3 asks the loser to
        # send again, and the second answer is 412 if the other one landed. Transient errors are retried
        # by botocore itself, inside `_call`.
        for _ in range(3):
            try:
                self._call(key, "put_object", Bucket=self.bucket, Key=self._key(key), Body=data,
                           IfNoneMatch="*")
                return
            except ClientError as e:
                status = _status(e)
                if status == 412:
                    raise AlreadyExists(key) from None
                if status == 501:
                    raise StorageError(f"storage error: {self.url(key)}: the server at "
                                       f"{self.endpoint or 'AWS S3'} does not support conditional writes "
                                       f"(If-None-Match), which write-once results need") from None
                if status != 409:
                    raise self._error(key, e) from None
                last = e
        raise self._error(key, last)

    def delete(self, key: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call(key, "delete_object", Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if _status(e) != 404:
                raise self._error(key, e) from None

    def list_modified(self, prefix: str, *, suffix: str = "") -> dict[str, float]:
        from botocore.exceptions import BotoCoreError, ClientError

        directory = self._key(prefix).rstrip("/") + "/" if self._key(prefix) else ""
        found = {}
        self._attempts.count = 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=directory, Delimiter="/")
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(directory):]
                    if name and "/" not in name and _is_listed(name, suffix):
                        found[posixpath.join(prefix, name)] = obj["LastModified"].timestamp()
        except (ClientError, BotoCoreError) as e:
            raise self._error(prefix, e) from None
        return found


def _code(e) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _status(e) -> int | None:
    return e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
