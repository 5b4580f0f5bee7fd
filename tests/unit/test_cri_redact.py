"""No credential that crosses the CRI socket survives tracer.cri.wire.

Every secret below is a canary: the tests look for it (and for every 6-byte
piece of it) in the decoded dicts, in repr() of the calls, in the decoder's
stats and state, and in the JSON a recording would store.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest
from cri_traffic import (
    IMAGE,
    RUNTIME,
    CallSpec,
    H2Session,
    chunks_for,
    kubelet_like_calls,
)
from google.protobuf.descriptor import FieldDescriptor

from tracer.cri import api_pb2
from tracer.cri.redact import (
    KEY_CHECKED_MAPS,
    PLAIN_MAPS,
    REDACTED,
    REDACTED_FIELD_PATHS,
    REDACTED_FIELDS,
    REDACTED_MAPS,
    credential_key,
    redact,
)
from tracer.cri.model import DecoderConfig
from tracer.cri.wire import Chunk, CriDecoder

# these tests check message decoding: kubelet's polling calls are decoded too
DECODE_ALL = DecoderConfig(decode_polling_calls=True)

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
    "exec_url": "v8qpL3OTGtuuxk223pK4",
    "attach_url": "qJVAFXYaHcvMPrJJ5jAU",
    "port_forward_url": "3zF22UL4LX2NNheTzX2O",
    "credential_spec": "HLN56wupqMXrZExJI2Kk",
    "checkpoint_option": "kfY0M0qYYR1VBoOhwebt",
    "restore_option": "sXGFLpyku0rgKCsr7tvr",
    "restore_env": "LwsyRhvtQDXFPiYqTjdM",
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


def restore_request() -> api_pb2.RestorePodRequest:
    return api_pb2.RestorePodRequest(
        checkpoint_path="/var/lib/kubelet/checkpoints/web",
        config=sandbox_config(),
        runtime_handler="runc",
        options={"criu.tcp-established": SECRETS["restore_option"]},
        container_configs=[api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="app"),
            envs=[api_pb2.KeyValue(key="API_TOKEN", value=SECRETS["restore_env"].encode())],
        )],
    )


def windows_sandbox_request() -> api_pb2.RunPodSandboxRequest:
    config = sandbox_config()
    config.windows.security_context.credential_spec = '{"DomainJoinConfig":"' + SECRETS["credential_spec"] + '"}'
    return api_pb2.RunPodSandboxRequest(config=config)


def streaming_url(kind: str, token: str) -> str:
    return f"http://127.0.0.1:35000/{kind}/{token}"


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
        CallSpec(RUNTIME + "Exec", api_pb2.ExecRequest(container_id="c" * 64, cmd=["sh"], stdin=True, tty=True),
                 api_pb2.ExecResponse(url=streaming_url("exec", SECRETS["exec_url"]))),
        CallSpec(RUNTIME + "Attach", api_pb2.AttachRequest(container_id="c" * 64, stdout=True),
                 api_pb2.AttachResponse(url=streaming_url("attach", SECRETS["attach_url"]))),
        CallSpec(RUNTIME + "PortForward", api_pb2.PortForwardRequest(pod_sandbox_id="s" * 64, port=[8080]),
                 api_pb2.PortForwardResponse(url=streaming_url("portforward", SECRETS["port_forward_url"]))),
        CallSpec(RUNTIME + "CheckpointPod", api_pb2.CheckpointPodRequest(
            pod_sandbox_id="s" * 64, output_path="/var/lib/kubelet/checkpoints/web", container_ids=["c" * 64],
            options={"criu.leave-running": SECRETS["checkpoint_option"]}), api_pb2.CheckpointPodResponse()),
        CallSpec(RUNTIME + "RestorePod", restore_request(), api_pb2.RestorePodResponse(pod_sandbox_id="s" * 64)),
        CallSpec(RUNTIME + "RunPodSandbox", windows_sandbox_request(),
                 api_pb2.RunPodSandboxResponse(pod_sandbox_id="s" * 64)),
        CallSpec(RUNTIME + "UpdateContainerResources", api_pb2.UpdateContainerResourcesRequest(
            container_id="c" * 64, annotations={"example.com/db-password": SECRETS["annotation"]}),
                 api_pb2.UpdateContainerResourcesResponse()),
    ]


def test_redacted_field_paths_are_explicit() -> None:
    for field in ("username", "password", "auth", "identity_token", "registry_token"):
        assert f"runtime.v1.AuthConfig.{field}" in REDACTED_FIELD_PATHS
    assert "runtime.v1.AuthConfig.server_address" not in REDACTED_FIELD_PATHS
    assert "runtime.v1.KeyValue.value" in REDACTED_FIELD_PATHS
    assert "*.info[*]" in REDACTED_FIELD_PATHS
    for message in ("ExecResponse", "AttachResponse", "PortForwardResponse"):
        assert f"runtime.v1.{message}.url" in REDACTED_FIELD_PATHS
    for message in ("WindowsSandboxSecurityContext", "WindowsContainerSecurityContext"):
        assert f"runtime.v1.{message}.credential_spec" in REDACTED_FIELD_PATHS
    assert "*.options[*]" in REDACTED_FIELD_PATHS


def _fields(descriptor, seen=None):
    """Every (message descriptor, field descriptor) reachable from ``descriptor``."""
    seen = set() if seen is None else seen
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    for fd in descriptor.fields:
        yield descriptor, fd
        if fd.message_type is not None:
            yield from _fields(fd.message_type, seen)


def all_fields():
    seen: set[str] = set()
    for message in api_pb2.DESCRIPTOR.message_types_by_name.values():
        yield from _fields(message, seen)


def test_every_field_the_published_api_marks_debug_redact_is_redacted() -> None:
    marked = {(m.full_name, f.name) for m, f in all_fields() if f.GetOptions().debug_redact}
    assert marked == {("runtime.v1.AuthConfig", name)
                      for name in ("password", "auth", "identity_token", "registry_token")}
    assert marked <= REDACTED_FIELDS


def test_every_map_of_the_api_has_a_rule() -> None:
    maps = {f.name for _, f in all_fields() if f.message_type is not None and f.message_type.GetOptions().map_entry}
    rules = [REDACTED_MAPS, KEY_CHECKED_MAPS, PLAIN_MAPS]
    assert maps == set().union(*rules)
    assert sum(len(r) for r in rules) == len(maps)  # each map name in exactly one


# string fields whose name suggests a secret, reviewed and kept
REVIEWED_KEPT = {
    ("runtime.v1.KeyValue", "key"),  # environment variable names
    ("runtime.v1.MetricDescriptor", "label_keys"),  # metric label names
}
_SECRET_LIKE = re.compile(r"token|passw|secret|credential|auth|key|cert|url|cookie|bearer|signature|private|session",
                          re.IGNORECASE)


def test_every_secret_like_field_is_redacted_or_reviewed() -> None:
    found = {
        (m.full_name, f.name) for m, f in all_fields()
        if f.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
        and not m.GetOptions().map_entry and _SECRET_LIKE.search(f.name)
    }
    assert found - REVIEWED_KEPT <= REDACTED_FIELDS
    assert REVIEWED_KEPT <= found


def test_redact_restore_and_checkpoint() -> None:
    out = redact(restore_request())
    assert out["options"] == {"criu.tcp-established": REDACTED}
    assert out["checkpoint_path"] == "/var/lib/kubelet/checkpoints/web"
    assert out["container_configs"][0]["envs"] == [{"key": "API_TOKEN", "value": REDACTED}]
    assert out["config"]["annotations"]["example.com/api-token"] == REDACTED
    # DNSConfig.options is a list of resolver options, not a map: kept
    dns = api_pb2.PodSandboxConfig(dns_config=api_pb2.DNSConfig(options=["ndots:5"]))
    assert redact(dns) == {"dns_config": {"options": ["ndots:5"]}}
    assert_clean(repr(out))


def test_redact_streaming_urls_and_credential_specs() -> None:
    out = redact(api_pb2.ExecResponse(url=streaming_url("exec", SECRETS["exec_url"])))
    assert out == {"url": REDACTED}
    container = api_pb2.ContainerConfig(windows=api_pb2.WindowsContainerConfig(
        security_context=api_pb2.WindowsContainerSecurityContext(
            run_as_username="ContainerUser", credential_spec=SECRETS["credential_spec"])))
    assert redact(container)["windows"]["security_context"] == {
        "run_as_username": "ContainerUser", "credential_spec": REDACTED}
    assert_clean(repr(out) + repr(redact(container)) + repr(redact(windows_sandbox_request())))


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
        decoder = CriDecoder(DECODE_ALL)
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
        assert calls[5].request["cmd"] == ["sh"] and calls[5].response == {"url": REDACTED}
        assert calls[6].response == {"url": REDACTED} and calls[7].response == {"url": REDACTED}
        assert calls[8].request["options"] == {"criu.leave-running": REDACTED}
        assert calls[9].request["container_configs"][0]["envs"][0]["value"] == REDACTED
        assert calls[10].request["config"]["windows"]["security_context"]["credential_spec"] == REDACTED
        assert calls[11].request["annotations"] == {"example.com/db-password": REDACTED}
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
    decoder = CriDecoder(DECODE_ALL)
    calls = []
    for c in chunks:
        calls += decoder.feed(c)
    inferred = {c.method: c for c in calls if c.method_resolution == "inferred"}
    assert {"PullImage", "CreateContainer"} <= set(inferred)
    assert inferred["PullImage"].request["auth"]["password"] == REDACTED
    assert_clean(repr(calls))
