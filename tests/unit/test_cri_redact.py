"""No credential that crosses the CRI socket survives tracer.cri.wire.

Every secret below is a canary: the tests look for it (and for every 6-byte
piece of it) in the decoded dicts, in repr() of the calls, in the decoder's
stats and state, and in the JSON a recording would store.
"""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from cri_traffic import (
    IMAGE,
    RUNTIME,
    CallSpec,
    H2Session,
    chunks_for,
    kubelet_like_calls,
)

from tracer.cri import api_pb2
from tracer.cri.redact import REDACTED, REDACTED_FIELD_PATHS, credential_key, redact
from tracer.cri.wire import Chunk, CriDecoder

SECRETS = {  # random canaries: no 6-byte piece of them occurs anywhere else
    "username": "OhbVrpoiVgRV5IfLBcbf",
    "password": "noGMbJmTPSIAoCLrZ3aW",
    "auth": "ZkSBvrjn9Wvgfygw2wMq",
    "identity_token": "ZcUDIh7yfJs1ON43xKmT",
    "registry_token": "ecQoXsf2o3gyrDO1xkxw",
    "env": "nQrS7RPeMOkIUpkDyr7O",
    "annotation": "SJoRu1XXdo0cZuzren68",
    "label": "K4TunPFz46PDjqipVJIq",
    "applied": "VLB5LzxoiGFfWd3hjOkY",
    "info": "RBMeyyMDHqJ38aRUhR4I",
    "stdout": "WrXPvhsBkDa9U4UqGWlG",
    "stderr": "6g3Ot1OGMmjxWkI9X7H6",
    "header": "aMuFbh7x41Ztpdp4K8ff",
}


def pieces(secret: str, size: int = 6) -> list[str]:
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


def assert_clean(text: str) -> None:
    for secret in SECRETS.values():
        for piece in pieces(secret):
            assert piece not in text, (piece, secret)


def sandbox_config() -> api_pb2.PodSandboxConfig:
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="web", uid="u" * 32, namespace="default"),
        labels={"app": "web", "db-password": SECRETS["label"]},
        annotations={
            "kubernetes.io/config.source": "api",
            "example.com/api-token": SECRETS["annotation"],
            "kubectl.kubernetes.io/last-applied-configuration": '{"env":"' + SECRETS["applied"] + '"}',
        },
    )


def pull_request() -> api_pb2.PullImageRequest:
    return api_pb2.PullImageRequest(
        image=api_pb2.ImageSpec(image="registry.example.com/app:1"),
        auth=api_pb2.AuthConfig(
            username=SECRETS["username"], password=SECRETS["password"], auth=SECRETS["auth"],
            server_address="registry.example.com", identity_token=SECRETS["identity_token"],
            registry_token=SECRETS["registry_token"]),
        sandbox_config=sandbox_config(),
    )


def create_request() -> api_pb2.CreateContainerRequest:
    return api_pb2.CreateContainerRequest(
        pod_sandbox_id="s" * 64,
        config=api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="app"),
            image=api_pb2.ImageSpec(image="registry.example.com/app:1"),
            envs=[api_pb2.KeyValue(key="DB_PASSWORD", value=SECRETS["env"].encode()),
                  api_pb2.KeyValue(key="MODE", value=b"prod")],
            annotations={"vault.example.com/secret": SECRETS["annotation"]},
        ),
        sandbox_config=sandbox_config(),
    )


def secret_calls() -> list[CallSpec]:
    return [
        CallSpec(IMAGE + "PullImage", pull_request(), api_pb2.PullImageResponse(image_ref="sha256:" + "a" * 64),
                 extra_headers=[("authorization", "Bearer " + SECRETS["header"])]),
        CallSpec(RUNTIME + "CreateContainer", create_request(),
                 api_pb2.CreateContainerResponse(container_id="c" * 64)),
        CallSpec(RUNTIME + "ContainerStatus", api_pb2.ContainerStatusRequest(container_id="c" * 64, verbose=True),
                 api_pb2.ContainerStatusResponse(
                     status=api_pb2.ContainerStatus(id="c" * 64, annotations={"token": SECRETS["annotation"]}),
                     info={"info": '{"process":{"env":["X=' + SECRETS["info"] + '"]}}'})),
        CallSpec(RUNTIME + "ExecSync", api_pb2.ExecSyncRequest(container_id="c" * 64, cmd=["cat", "/token"]),
                 api_pb2.ExecSyncResponse(stdout=SECRETS["stdout"].encode(), stderr=SECRETS["stderr"].encode())),
        CallSpec(RUNTIME + "Status", api_pb2.StatusRequest(verbose=True),
                 api_pb2.StatusResponse(info={"config": '{"auths":"' + SECRETS["auth"] + '"}'})),
    ]


def test_redacted_field_paths_are_explicit() -> None:
    for field in ("username", "password", "auth", "identity_token", "registry_token"):
        assert f"runtime.v1.AuthConfig.{field}" in REDACTED_FIELD_PATHS
    assert "runtime.v1.AuthConfig.server_address" not in REDACTED_FIELD_PATHS
    assert "runtime.v1.KeyValue.value" in REDACTED_FIELD_PATHS
    assert "*.info[*]" in REDACTED_FIELD_PATHS


def test_redact_pull_image() -> None:
    out = redact(pull_request())
    assert out["auth"] == {
        "username": REDACTED, "password": REDACTED, "auth": REDACTED,
        "server_address": "registry.example.com",
        "identity_token": REDACTED, "registry_token": REDACTED,
    }
    assert out["image"] == {"image": "registry.example.com/app:1"}
    labels = out["sandbox_config"]["labels"]
    assert labels == {"app": "web", "db-password": REDACTED}
    annotations = out["sandbox_config"]["annotations"]
    assert annotations["kubernetes.io/config.source"] == "api"
    assert annotations["example.com/api-token"] == REDACTED
    assert annotations["kubectl.kubernetes.io/last-applied-configuration"] == REDACTED
    assert_clean(repr(out))


def test_redact_env_values_keep_keys() -> None:
    out = redact(create_request())
    assert out["config"]["envs"] == [{"key": "DB_PASSWORD", "value": REDACTED}, {"key": "MODE", "value": REDACTED}]
    assert out["config"]["annotations"] == {"vault.example.com/secret": REDACTED}
    assert_clean(repr(out))


@pytest.mark.parametrize("key, secret", [
    ("token", True), ("my-api-key", True), ("PASSWORD", True), ("aws-secret-access", True),
    ("io.kubernetes.container.name", False), ("app", False), ("kubernetes.io/config.hash", False),
])
def test_credential_keys(key: str, secret: bool) -> None:
    assert credential_key(key) is secret


def test_secrets_never_leave_the_decoder() -> None:
    session = H2Session()
    sent = [session.call(spec) for spec in secret_calls()]
    for side in ("client", "server"):
        decoder = CriDecoder()
        calls = []
        for chunk in chunks_for(session.writes, "k", side):
            assert_clean(repr(chunk))  # Chunk.data is not in its repr
            calls += decoder.feed(chunk)
        assert [c.method for c in calls] == [s.method for s in sent]
        assert calls[0].request["auth"]["server_address"] == "registry.example.com"
        assert calls[1].request["config"]["envs"][0] == {"key": "DB_PASSWORD", "value": REDACTED}
        assert calls[2].response["info"] == {"info": REDACTED}
        assert calls[3].request["cmd"] == ["cat", "/token"]  # commands stay
        assert calls[3].response["stdout"] == REDACTED
        assert calls[4].response["info"] == {"config": REDACTED}
        assert_clean(repr(calls))
        assert_clean(json.dumps([dataclasses.asdict(c) for c in calls], default=str))
        assert_clean(repr(decoder.stats) + json.dumps(decoder.stats.as_dict()))
        assert_clean(repr(decoder.endpoint_state("k")))


def test_secrets_do_not_leak_through_error_paths() -> None:
    """Truncation, garbage, unresolved paths, inference, oversize messages."""
    rng = random.Random(1)
    session = H2Session()
    mix = kubelet_like_calls(rng)
    for _ in range(150):
        session.call(next(mix))
    for spec in secret_calls():  # inserts the :paths before attach
        session.call(spec)
    attach = len(session.writes)
    for spec in secret_calls():
        session.call(spec)
    chunks = chunks_for(session.writes[attach:], "k", "client", read_size=50)
    # damage: truncate one chunk, duplicate another, insert garbage
    mangled: list[Chunk] = []
    for i, c in enumerate(chunks):
        if i % 17 == 5:
            mangled.append(Chunk(c.connection, c.side, c.direction, c.ktime_ns, c.data[:10], truncated=True,
                                 original_len=len(c.data)))
        elif i % 23 == 7:
            mangled.append(Chunk(c.connection, c.side, c.direction, c.ktime_ns, c.data[::-1]))
        else:
            mangled.append(c)
    for config_limit in (None, 64):
        from tracer.cri.wire import DecoderConfig

        decoder = CriDecoder(DecoderConfig(max_message_bytes=config_limit) if config_limit else None)
        calls = []
        for c in mangled:
            calls += decoder.feed(c)
        calls += decoder.close_connection("k", 10**12)
        assert calls
        assert_clean(repr(calls))
        assert_clean(json.dumps([dataclasses.asdict(c) for c in calls], default=str))
        assert_clean(repr(decoder.stats))
        assert decoder.stats.errors["internal_error"] == 0
    # the clean run infers PullImage and CreateContainer, and redacts them
    decoder = CriDecoder()
    calls = []
    for c in chunks:
        calls += decoder.feed(c)
    inferred = {c.method: c for c in calls if c.method_resolution == "inferred"}
    assert {"PullImage", "CreateContainer"} <= set(inferred)
    assert inferred["PullImage"].request["auth"]["password"] == REDACTED
    assert_clean(repr(calls))
