"""A sweep root under an S3 prefix, on AWS or any S3-compatible server: objects through boto3, and a
pyarrow ``S3FileSystem`` on the same endpoint and root for Ray Tune."""

from __future__ import annotations

import os
import posixpath
import threading
from urllib.parse import SplitResult

import pyarrow.fs as pafs

from w2sweep.storage.base import AlreadyExists, Storage, StorageError, is_listed
from w2sweep.storage.s3_errors import (CONNECT_TIMEOUT_S, DEFAULT_MAX_ATTEMPTS, MAX_POOL_CONNECTIONS, READ_TIMEOUT_S,
                                       describe, error_code, http_status, s3_endpoint)


class S3Storage(Storage, scheme="s3"):
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

    @classmethod
    def from_parts(cls, uri: str, parts: SplitResult, *, max_attempts: int | None) -> S3Storage:
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
        return cls(parts.netloc, parts.path.strip("/"), max_attempts=max_attempts)

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
            if http_status(e) in (404, 409, 412, 501) and error_code(e) != "NoSuchBucket":
                raise
            raise self._error(key, e) from None
        except BotoCoreError as e:
            raise self._error(key, e) from None

    def check(self) -> None:
        """`Storage.check`, after asking whether the bucket exists: some servers (SeaweedFS) create a
        missing bucket on the probe's PUT, and a typo in a bucket name must be an error, not a new bucket."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if http_status(e) == 404:
                raise StorageError(f"storage error: {self.uri}: bucket {self.bucket!r} does not exist at "
                                   f"{self.endpoint or f'AWS S3 ({self.region})'}") from None
        except BotoCoreError:
            pass
        # Anything else (a HEAD answer has no body, so no error code) is named by the probe's PUT below,
        # with its retries and one-line error.
        super().check()

    def _error(self, key: str, e: Exception) -> StorageError:
        return describe(e, where=f"storage error: {self.url(key)}", at=self.endpoint or f"AWS S3 ({self.region})",
                        bucket=self.bucket, attempts=getattr(self._attempts, "count", 0))

    # ---- the interface ------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call(key, "head_object", Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if http_status(e) == 404:
                return False
            raise self._error(key, e) from None
        return True

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._call(key, "get_object", Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read()
        except ClientError as e:
            if http_status(e) == 404:
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
                status = http_status(e)
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
            if http_status(e) != 404:
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
                    if name and "/" not in name and is_listed(name, suffix):
                        found[posixpath.join(prefix, name)] = obj["LastModified"].timestamp()
        except (ClientError, BotoCoreError) as e:
            raise self._error(prefix, e) from None
        return found
