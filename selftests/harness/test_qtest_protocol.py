"""The qtest client against a scripted peer: async IRQ lines interleaved with replies,
FAIL/ERR, EOF, timeouts, the wire format of bulk commands, and the transcript.

A socketpair stands in for QEMU here on purpose: these tests pin the parser to exact byte
sequences (e.g. an IRQ line between a request and its reply) that a real QEMU produces only
by timing; the real thing is exercised by every test in qtests/."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ivflat.host import timeouts
from ivflat.protocol.qtest import QTestDisconnected, QTestError, QTestProtocol, QTestTimeout


class Script:
    """The QEMU end: answers each request line with the canned lines of a responder (None:
    hang up)."""

    def __init__(self, sock: socket.socket,
                 respond: Callable[[str], list[str] | None]) -> None:
        self.sock, self.respond = sock, respond
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.sock.makefile("rb") as f:
            for raw in f:
                line = raw.decode().rstrip("\n")
                self.seen.append(line)
                out = self.respond(line)
                if out is None:
                    self.sock.shutdown(socket.SHUT_RDWR)
                    return
                self.sock.sendall("".join(x + "\n" for x in out).encode())


@pytest.fixture
def wire() -> Iterator[Callable[..., tuple[QTestProtocol, Script]]]:
    made: list[tuple[QTestProtocol, Script]] = []

    def make(respond: Callable[[str], list[str] | None],
             timeout: float = 2.0) -> tuple[QTestProtocol, Script]:
        a, b = socket.socketpair()
        proto = QTestProtocol(a, timeout=timeout)
        script = Script(b, respond)
        made.append((proto, script))
        return proto, script

    yield make
    for proto, script in made:
        proto.close()
        script.sock.close()
        script.thread.join(timeout=timeouts.scaled())


def test_irq_lines_between_request_and_reply_are_recorded_in_order(wire):
    """IRQ lines QEMU writes around a reply are not replies: the read gets its OK value, and
    every IRQ line lands in the log in the order it came, with increasing seq and the
    level it set, so pulse counts see every edge."""
    proto, _ = wire(lambda line: ["IRQ raise 6", "OK 0x0000000000000005", "IRQ lower 6",
                                  "IRQ raise 3"])
    assert proto.readl(0x400FF008) == 5
    evs = proto.wait_irq(3, count=1)
    assert [(e.seq, e.line, e.raised) for e in proto.irq_events()] == [
        (0, 6, True), (1, 6, False), (2, 3, True)]
    assert evs[0].seq == 2
    assert proto.get_irq(6) is False and proto.get_irq(3) is True


def test_irq_lines_while_idle_wake_a_waiter(wire):
    """IRQ lines can arrive with no request in flight; a waiter wakes on them."""
    proto, _ = wire(lambda line: ["OK", "IRQ raise 6", "IRQ lower 6"])
    mark = proto.irq_mark()
    proto.cmd("endianness")
    assert len(proto.wait_irq(6, raised=False, since=mark)) == 1


def test_fail_reply_names_the_command(wire):
    """A FAIL reply raises QTestError naming the request and QEMU's reason, so a failing test
    says which access QEMU refused."""
    proto, _ = wire(lambda line: ["FAIL Unknown device"])
    with pytest.raises(QTestError, match=r"irq_intercept_in /machine/nope.*Unknown device"):
        proto.irq_intercept_in("/machine/nope")


def test_err_reply_is_an_error_too(wire):
    """An ERR reply (malformed request) is a QTestError too, never taken for a value."""
    proto, _ = wire(lambda line: ["ERR invalid argument size"])
    with pytest.raises(QTestError, match="invalid argument size"):
        proto.bufwrite(0x60000000, b"x")


def test_eof_is_reported_as_disconnect_with_reason(wire):
    """When QEMU closes the qtest socket the request fails as QTestDisconnected with why QEMU
    went away, and every later request fails the same way instead of hanging: a crash
    reads as a crash, not a protocol timeout."""
    a, b = socket.socketpair()
    proto = QTestProtocol(a, timeout=2, death_reason=lambda: "QEMU was killed by SIGABRT")
    b.close()
    try:
        with pytest.raises(QTestDisconnected, match="SIGABRT"):
            proto.readl(0)
        with pytest.raises(QTestDisconnected):  # and stays so
            proto.readl(0)
    finally:
        proto.close()


def test_no_reply_times_out_with_clear_message(wire):
    """A request QEMU never answers raises QTestTimeout naming the request, within its bound:
    a hung QEMU cannot hang the suite."""
    proto, _ = wire(lambda line: [], timeout=0.3)
    with pytest.raises(QTestTimeout, match=r"no reply to qtest command 'readl 0x10'"):
        proto.readl(0x10)


def test_give_up_ends_the_wait_for_a_reply_with_its_reason(wire):
    """*give_up* is asked while no reply comes: its reason ends the wait at once, in the
    QTestTimeout, long before the bound; a reply that comes is taken as ever."""
    proto, _ = wire(lambda line: [], timeout=100)
    asked: list[int] = []

    def give_up() -> str | None:
        asked.append(1)
        return "it spins" if len(asked) >= 3 else None

    start = time.monotonic()
    with pytest.raises(QTestTimeout, match=r"'readl 0x10' \(it spins\)"):
        proto.cmd("readl 0x10", give_up=give_up)
    assert len(asked) == 3 and time.monotonic() - start < timeouts.scaled(base=1.0)
    answers, _ = wire(lambda line: ["OK 0x5"])
    assert answers.cmd("readl 0x20", give_up=lambda: None) == "0x5"


def test_wait_irq_timeout_lists_what_came(wire):
    """A wait for an IRQ that never comes times out naming the line and the IRQ events that
    did come, so the failure shows what the device did instead."""
    proto, _ = wire(lambda line: ["IRQ raise 2", "OK"])
    proto.cmd("endianness")
    with pytest.raises(QTestTimeout, match=r"line 6 .*IRQ raise 2"):
        proto.wait_irq(6, timeout=0.2)


def test_wire_format_of_accessors(wire):
    """Requests are the exact qtest syntax of system/qtest.c."""
    data = bytes(range(10))
    replies = {"b64read": "OK " + base64.b64encode(data).decode(), "read": "OK 0x" + data.hex(),
               "clock_step": "OK 100"}
    proto, script = wire(lambda line: [replies.get(line.split()[0], "OK 0x1")])
    proto.writel(0x400FF00C, 0x10002)
    proto.writeb(0x10, 0xFF)
    proto.memset(0x60000000, 16, 0x1A5)
    proto.bufwrite(0x60000000, b"\x00\xff")
    assert proto.bufread(0x60000000, 10) == data
    assert proto.memread(0x60000000, 10) == data
    proto.memwrite(0x60000000, b"\xab")
    proto.clock_step(100)
    assert script.seen == [
        "writel 0x400ff00c 0x10002", "writeb 0x10 0xff", "memset 0x60000000 0x10 0xa5",
        "b64write 0x60000000 0x2 AP8=", "b64read 0x60000000 0xa", "read 0x60000000 0xa",
        "write 0x60000000 0x1 0xab", "clock_step 100"]


def test_transcript_keeps_both_directions(wire):
    """The transcript records requests and everything QEMU wrote back, IRQ lines included:
    the failure report and the reproducer replay it."""
    proto, _ = wire(lambda line: ["IRQ raise 6", "OK little"])
    assert not proto.big_endian()
    text = proto.transcript.text()
    assert "> endianness" in text and "< IRQ raise 6" in text and "< OK little" in text
    assert proto.transcript.commands() == ["endianness"]


def test_pipelined_requests_get_their_own_replies_in_order(wire):
    """cmds(): several requests in one write, each reply matched to its request even with
    IRQ lines among them; a FAIL names its request, and the request after the batch gets
    its own reply (every reply of the batch was taken)."""
    answers = {"readl 0x0": ["OK 0x1"], "readl 0x4": ["IRQ raise 6", "OK 0x2"],
               "bad": ["FAIL no"], "endianness": ["OK little"]}
    proto, script = wire(lambda line: answers[line])
    assert proto.cmds(["readl 0x0", "readl 0x4", "endianness"]) == ["0x1", "0x2", "little"]
    assert [e.line for e in proto.irq_events()] == [6]
    with pytest.raises(QTestError, match="'bad' failed: FAIL no"):
        proto.cmds(["readl 0x0", "bad", "readl 0x4"])
    assert proto.cmd("endianness") == "little"
    assert script.seen == ["readl 0x0", "readl 0x4", "endianness", "readl 0x0", "bad",
                           "readl 0x4", "endianness"]


def test_pipelined_late_replies_are_dropped_not_misread(wire):
    """A batch that times out after its first reply abandons the rest: their late replies
    are dropped, the next request reads its own."""
    gate = threading.Event()

    def respond(line: str) -> list[str]:
        if line == "slow":
            gate.wait(timeouts.scaled())
            return ["OK late"]
        return ["OK " + line]

    proto, _ = wire(respond, timeout=0.3)
    with pytest.raises(QTestTimeout, match="'slow'"):
        proto.cmds(["a", "slow", "b"])
    gate.set()
    assert proto.cmd("c") == "c"
