"""Turn a decoded CRI message into a plain dict without its secrets.

This is the only way a decoded protobuf leaves :mod:`tracer.cri.wire`: the
decoder never hands out message objects or raw payload bytes. What is
removed (replaced by the string ``"[redacted]"`` so that a reader sees that
something was there):

* ``REDACTED_FIELDS``: whole fields, by message type and field name:
  registry credentials (``AuthConfig``; every field the published API marks
  ``debug_redact`` is among them), environment values, ExecSync output, the
  streaming-server URLs of Exec, Attach and PortForward (their path is a
  one-time token that opens the stream) and Windows GMSA credential specs;
* every value of a ``map<string,string>`` field named in ``REDACTED_MAPS``
  (the verbose ``info`` maps carry runtime configs and OCI specs, which
  include environment values and registry credentials; the ``options`` of
  CheckpointPod and RestorePod are opaque runtime-specific settings);
* values of label, annotation and label-selector maps whose *key* looks like
  a credential (``credential_key``) or is in ``REDACTED_MAP_KEYS`` (the
  last-applied-configuration annotation is the whole pod manifest, env
  values included);
* environment variable values (``ContainerConfig.envs[].value``, also in
  RestorePod's container configs): keys stay.

Commands and arguments (``ContainerConfig.command`` and ``args``, taken
together as one argv, ``ExecSyncRequest.cmd``, ``ExecRequest.cmd``) go
through the same argv redaction as every exec the kernel shows
(:mod:`tracer.redaction`: the default rules and the user's filters): kubelet
expands Secret-backed variables into them. Checkpoint and restore paths are
kept. The other map fields (``sysctls``,
``unified``) hold kernel and cgroup settings and are kept
(``PLAIN_MAPS``).
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tracer.redaction import DEFAULT_REDACTION, ArgvRedaction

REDACTED = "[redacted]"

# (message full name, field name): the field's value never leaves the decoder.
REDACTED_FIELDS: frozenset[tuple[str, str]] = frozenset({
    ("runtime.v1.AuthConfig", "username"),
    ("runtime.v1.AuthConfig", "password"),
    ("runtime.v1.AuthConfig", "auth"),
    ("runtime.v1.AuthConfig", "identity_token"),
    ("runtime.v1.AuthConfig", "registry_token"),
    # environment values: the KeyValue messages of ContainerConfig.envs
    ("runtime.v1.KeyValue", "value"),
    # output of exec probes can print anything the container knows
    ("runtime.v1.ExecSyncResponse", "stdout"),
    ("runtime.v1.ExecSyncResponse", "stderr"),
    # the streaming server's URL ends in a one-time token: whoever can reach
    # the server with it gets the exec session, the attached terminal or the
    # forwarded ports
    ("runtime.v1.ExecResponse", "url"),
    ("runtime.v1.AttachResponse", "url"),
    ("runtime.v1.PortForwardResponse", "url"),
    # the contents of a Windows GMSA credential spec
    ("runtime.v1.WindowsSandboxSecurityContext", "credential_spec"),
    ("runtime.v1.WindowsContainerSecurityContext", "credential_spec"),
})

# map fields (by field name) whose every value is redacted; keys stay.
# ``options``: CheckpointPodRequest and RestorePodRequest, opaque
# runtime-specific settings ("must not contain secrets", which nothing
# enforces).
REDACTED_MAPS: frozenset[str] = frozenset({"info", "options"})

# map fields (by field name) whose values are redacted when the key looks
# like a credential
KEY_CHECKED_MAPS: frozenset[str] = frozenset({"labels", "annotations", "label_selector"})

# map fields (by field name) that are kept whole: sysctls
# (LinuxPodSandboxConfig) and cgroup v2 settings (LinuxContainerResources).
# Every map field of api.proto is in exactly one of the three sets (a unit
# test checks it, so that a map added to the API is reviewed).
PLAIN_MAPS: frozenset[str] = frozenset({"sysctls", "unified"})

REDACTED_MAP_KEYS: frozenset[str] = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration",
})

_CREDENTIAL_KEY = re.compile(
    r"token|passw|pwd|secret|credential|auth|key|cert|session|cookie|bearer|signature|private",
    re.IGNORECASE,
)

# Command lines: (message full name) → its argv fields, in argv order.  The
# values go through tracer.redaction like any exec's argv.
ARGV_FIELDS: dict[str, tuple[str, ...]] = {
    "runtime.v1.ContainerConfig": ("command", "args"),
    "runtime.v1.ExecSyncRequest": ("cmd",),
    "runtime.v1.ExecRequest": ("cmd",),
}

# Every redacted field path, for documentation and tests.
REDACTED_FIELD_PATHS: tuple[str, ...] = (
    *sorted(f"{msg}.{name}" for msg, name in REDACTED_FIELDS),
    *sorted(f"*.{name}[*]" for name in REDACTED_MAPS),
    *sorted(f"*.{name}[<credential-like key>]" for name in KEY_CHECKED_MAPS),
    *sorted(f"{msg}.{name}[<argv redaction>]" for msg, names in ARGV_FIELDS.items() for name in names),
)


def credential_key(key: str) -> bool:
    """True when a label or annotation key looks like it names a secret."""
    return key in REDACTED_MAP_KEYS or _CREDENTIAL_KEY.search(key) is not None


def redact(message: Message, argv: ArgvRedaction = DEFAULT_REDACTION) -> dict[str, Any]:
    """A plain dict of the set fields of ``message``, secrets removed.

    Field names are the proto names; enums become their names, int64 stays
    int, bytes become text when they are UTF-8 (else ``"0x…"`` hex).
    Command lines go through ``argv`` (see ``ARGV_FIELDS``).
    """
    return _message(message, argv)


def _message(message: Message, argv: ArgvRedaction) -> dict[str, Any]:
    out: dict[str, Any] = {}
    type_name = message.DESCRIPTOR.full_name
    command_line = ARGV_FIELDS.get(type_name)
    if command_line:
        out.update(_command_line(message, command_line, argv))
    for fd, value in message.ListFields():
        if command_line and fd.name in command_line:
            continue
        if (type_name, fd.name) in REDACTED_FIELDS:
            out[fd.name] = [REDACTED for _ in value] if fd.is_repeated else REDACTED
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            out[fd.name] = _map(fd, value, argv)
        elif fd.is_repeated:
            out[fd.name] = [_scalar_or_message(fd, v, argv) for v in value]
        else:
            out[fd.name] = _scalar_or_message(fd, value, argv)
    return out


def _command_line(message: Message, names: tuple[str, ...], argv: ArgvRedaction) -> dict[str, list[str]]:
    """The argv fields of a message, redacted as one argv (a `--password`
    at the end of `command` hides the first of `args`); a field left empty
    (drop_args) is left out."""
    parts = [[str(v) for v in getattr(message, name)] for name in names]
    if not any(parts):
        return {}
    # an empty `command` runs the image's entrypoint: a program unknown here
    program = [] if parts[0] else [""]
    whole = program + [v for part in parts for v in part]
    redacted = list(argv.redact(whole[0], whole))[len(program):]
    out = {}
    position = 0
    for name, part in zip(names, parts):
        kept = redacted[position:position + len(part)]
        if kept:
            out[name] = kept
        position += len(part)
    return out


def _map(fd: FieldDescriptor, value: Any, argv: ArgvRedaction) -> dict[str, Any]:
    value_fd = fd.message_type.fields_by_name["value"]
    result: dict[str, Any] = {}
    for key in value:
        k = str(key)
        if fd.name in REDACTED_MAPS or (fd.name in KEY_CHECKED_MAPS and credential_key(k)):
            result[k] = REDACTED
        else:
            result[k] = _scalar_or_message(value_fd, value[key], argv)
    return result


def _scalar_or_message(fd: FieldDescriptor, value: Any, argv: ArgvRedaction) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(value, argv)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        enum_value = fd.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else int(value)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(value).hex()
    return value
