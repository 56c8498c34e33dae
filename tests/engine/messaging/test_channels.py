"""Channel files: every error located by file, line and field; shipped default; env overrides; reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.errors import ConfigurationError
from engine.messaging.channels import check_channel_dirs, load_channel_dirs
from engine.messaging.conditions import MessageView, field_value
from engine.messaging.registry import ChannelRegistry
from engine.messaging.settings import SHIPPED_CHANNELS_DIR

from .conftest import channels_from, header_of, hl7, inbound, wait_for, write_channel

BROKEN = """\
name: lab results
source:
  url: mllp://127.0.0.1:notaport
  ack_after: later
  duplicate_window: soon
filters:
  - message_typo: ORU
  - field: PID-8x
    equals: F
transform: auto
destinations:
  - url: records
    retry: {attempts: 0, colour: red}
  - url: ftp://example.org/in
  - name: dup
    url: http://a/
  - name: dup
    url: file://relative/folder
"""


def test_check_reports_file_line_and_field_for_every_error(tmp_path: Path):
    path = write_channel(tmp_path, BROKEN, "broken.yaml")
    _, problems = check_channel_dirs([tmp_path], env={})
    found = {(p.line, p.field) for p in problems}
    assert (1, "name") in found
    assert (3, "source.url") in found
    assert (4, "source.ack_after") in found
    assert (5, "source.duplicate_window") in found
    assert (7, "filters[0].message_typo") in found
    assert (8, "filters[1].field") in found
    assert (13, "destinations[0].retry.attempts") in found
    assert (13, "destinations[0].retry.colour") in found
    assert (14, "destinations[1].url") in found
    assert (17, "destinations[3].name") in found
    assert (18, "destinations[3].url") in found
    assert all(p.file == str(path) for p in problems)
    assert str(problems[0]).startswith(f"{path}:1: name: ")


def test_yaml_syntax_error_has_a_line(tmp_path: Path):
    write_channel(tmp_path, "name: x\nsource: [unclosed\n", "bad.yaml")
    _, problems = check_channel_dirs([tmp_path], env={})
    assert problems and problems[0].line in (2, 3) and "YAML syntax" in problems[0].message
    with pytest.raises(ConfigurationError, match="bad.yaml"):
        load_channel_dirs([tmp_path], env={})


def test_shipped_default_channel_and_env_override(tmp_path: Path):
    channels = load_channel_dirs(
        [SHIPPED_CHANNELS_DIR], env={"CONDUIT_MLLP_PORT": "12345", "CONDUIT_MLLP_HOST": "127.0.0.2"}
    )
    default = channels["default"]
    assert default.transform == "auto" and [d.scheme for d in default.destinations] == ["records"]
    source = default.mllp_source()
    assert source is not None and (source.host, source.port) == ("127.0.0.2", 12345)
    # a site file named "default" replaces (here: disables) the shipped one
    write_channel(tmp_path, "name: default\nenabled: false\n", "default.yaml")
    assert "default" not in load_channel_dirs([SHIPPED_CHANNELS_DIR, tmp_path], env={})


def test_loading_refuses_a_transform_naming_no_mapping(tmp_path: Path):
    """Start and reload refuse it too: otherwise every message would be ACKed and then fail."""
    write_channel(
        tmp_path,
        "name: t\nsource: {url: 'mllp://127.0.0.1:2601'}\ntransform: no-such-mapping\n"
        "destinations:\n  - name: records\n    url: 'records:'\n",
        "t.yaml",
    )
    with pytest.raises(ConfigurationError, match=r"t.yaml:3: transform: no mapping named 'no-such-mapping'"):
        load_channel_dirs([tmp_path], env={})


def test_two_channels_on_one_port_are_refused(tmp_path: Path):
    write_channel(tmp_path, "name: a\nsource: {url: 'mllp://127.0.0.1:2600'}\n", "a.yaml")
    write_channel(tmp_path, "name: b\nsource: {url: 'mllp://127.0.0.1:2600'}\n", "b.yaml")
    _, problems = check_channel_dirs([tmp_path], env={})
    assert any(p.field == "source.url" and "also the source" in p.message for p in problems)


def test_field_conditions(tmp_path: Path):
    raw = hl7("C1", pid8="F")
    view = MessageView(header_of(raw), raw)
    assert field_value(view, "PID-8") == "F"
    assert field_value(view, "PID-3.1") == "12345"
    assert field_value(view, "PID-3.4") == "HOSP"
    assert field_value(view, "MSH-10") == "C1"
    assert field_value(view, "MSH-9.2") == "A01"
    assert field_value(view, "OBX-5") is None
    channel = channels_from(
        """
        name: c
        filters:
          - any: [{message_type: ORU}, {field: PID-5.1, matches: "^DO"}]
          - sender: "LAB^*"
          - version: ["2.5.1"]
        """,
        tmp_path,
    )["c"]
    assert channel.filter is not None and channel.filter(view)
    other = hl7("C2", sender="RAD")
    assert not channel.filter(MessageView(header_of(other), other))


def test_reload_without_restart_and_without_loss(make_stack, tmp_path: Path):
    stack = make_stack(
        """
        name: test
        source: {url: 'mllp://127.0.0.1:2599'}
        destinations:
          - {name: first, url: 'http://example.invalid/first'}
        """
    )
    changes = []
    stack.registry.on_change(lambda: changes.append(stack.registry.generation))

    async def go():
        task = asyncio.create_task(stack.pool.run())
        try:
            before = [(await stack.inbox.receive(inbound(hl7(f"L{i}")))).message_id for i in range(20)]
            # reload while the first batch is in flight: the pipeline applies the channel in force when it runs
            stack.reload_with(
                """
                name: test
                source: {url: 'mllp://127.0.0.1:2599'}
                destinations:
                  - {name: first, url: 'http://example.invalid/first'}
                  - {name: second, url: 'http://example.invalid/second'}
                """
            )
            after = [(await stack.inbox.receive(inbound(hl7(f"M{i}")))).message_id for i in range(20)]
            await wait_for(
                lambda: all(stack.store.get(i).summary.status == "done" for i in before + after), 20
            )
            # an invalid file is refused and the channels in force stay
            write_channel(stack.folder, "name: [oops\n")
            with pytest.raises(ConfigurationError):
                stack.registry.reload()
            assert stack.registry.get("test") is not None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert changes == [1]
    first = stack.fakes["http://example.invalid/first"].received
    second = {p.split(b"|")[9] for p in stack.fakes["http://example.invalid/second"].received}
    # every message reached the destination it had before; every message piped after the reload the new one
    assert len(first) == 40 and {f"M{i}".encode() for i in range(20)} <= second


def test_registry_lists_mllp_sources(tmp_path: Path):
    write_channel(tmp_path, "name: a\nsource: {url: 'mllp://127.0.0.1:2601', allowed_senders: ['LAB^*']}\n")
    registry = ChannelRegistry([tmp_path])
    [source] = registry.mllp_sources()
    assert (source.channel, source.port, source.allowed_senders) == ("a", 2601, ("LAB^*",))
