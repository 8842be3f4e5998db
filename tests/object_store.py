"""An S3 API for the tests: moto's server on 127.0.0.1, reached as a pod reaches S3 or MinIO.

The server runs on a thread of the test process; whatever reaches it (s3fs in this process, a
task's subprocess) does so over HTTP with credentials and AWS_ENDPOINT_URL in its environment,
the keys of the Secret `pipeline.object_store_secret` names.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.serving.servers import free_port


@dataclass(frozen=True)
class LocalS3:
    """The env a client needs (credentials, endpoint) and one empty bucket's URI."""

    env: dict[str, str]
    bucket: str  # s3://<name>


@contextlib.contextmanager
def local_s3() -> Iterator[LocalS3]:
    """Start the server with a new bucket (moto keeps buckets for the whole process: a fresh name each time)."""
    import s3fs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "fusionrec-test", "AWS_SECRET_ACCESS_KEY": "fusionrec-test",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    name = f"fusionrec-models-{uuid.uuid4().hex[:8]}"
    try:
        s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                          client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}, skip_instance_cache=True).mkdir(name)
        yield LocalS3(env=env, bucket=f"s3://{name}")
    finally:
        server.stop()


def reach_from_this_process(s3: LocalS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the server's env into this process (as a pod has it) and drop s3fs clients of earlier servers."""
    import fsspec

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
