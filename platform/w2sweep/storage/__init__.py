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

`base` holds the interface, its errors and `Storage.from_uri`; `local` and `s3` the two backends;
`s3_errors` how S3 requests retry and how their failures read.
"""

from w2sweep.storage.base import AlreadyExists, Storage, StorageError, in_storage_env
from w2sweep.storage.local import LocalStorage
from w2sweep.storage.s3 import S3Storage

__all__ = ["AlreadyExists", "LocalStorage", "S3Storage", "Storage", "StorageError", "in_storage_env"]
