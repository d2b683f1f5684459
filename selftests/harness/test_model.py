"""The reference model on its own (no QEMU): each rule of the device it encodes, as it is
(known bugs switched on) and as it should be (switched off).

Why: the fuzzer trusts the model; a wrong model either hides device bugs or floods a
campaign with false alarms. Each fact here is also shown on a real QEMU by a catalogue
test (named in the docstring), so model and device are pinned from both sides.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivflat.device import board, known_bugs, rules
from ivflat.device.model import (
    AS_IS,
    FIXED,
    SHM_FAULTS,
    Greeting,
    Model,
    Undefined,
    cpu_pieces,
    pieces,
)

ID = 0x1234


def model(bugs=AS_IS, **kw) -> Model:
    m = Model(bugs=bugs, own_id=ID, **kw)
    m.message(ID, fd=True)  # one own vector, as the server's greeting gives
    return m


def test_bug_switches_are_the_registry():
    """The model's bug switches are the registry's bugs, all on as it is and none when
    fixed: a registered bug the model cannot switch could not be modelled fixed, and a
    switch of its own would be a bug nobody registered."""
    assert {b.id for b in known_bugs.BUGS} == AS_IS and not FIXED


REPO = Path(__file__).resolve().parents[2]


def test_rules_cover_the_bugs_and_are_implemented():
    """The oracle's table (ivflat.device.rules): every known bug breaks a rule taken from the spec
    or ivshmem-pci (a bug no rule names would be the device's word against nobody's), a
    rule differs by a bug or on purpose, never both, each rule id is cited where the model
    or the fuzzer implements it, and docs/fuzzing.md carries the table as rules.table() renders
    it."""
    assert {r.bug for r in rules.RULES if r.bug} == AS_IS
    assert not [r.id for r in rules.RULES if r.bug and r.deliberate]
    assert all(r.source for r in rules.RULES) and len(rules.BY_ID) == len(rules.RULES)
    code = (REPO / "fixtures/ivflat/device/model.py").read_text() + "".join(
        f.read_text() for f in (REPO / "fixtures/ivflat/fuzz").glob("*.py"))
    assert [r.id for r in rules.RULES if r.id not in code] == []
    assert rules.table() in (REPO / "docs/fuzzing.md").read_text()


@pytest.mark.parametrize("offset,size,expected", [
    (0x8, 4, [(0x8, 4)]),
    (0x9, 1, [(0x9, 1)]),
    (0xB, 4, [(0xB, 1), (0xC, 2), (0xE, 1)]),  # test_unaligned_word_write_does_not_ring
    (0x8, 8, [(0x8, 4), (0xC, 4)]),
    (0xE, 4, [(0xE, 2), (0x10, 2)]),  # the tail is the board's background region
    (-2, 4, [(-2, 2), (0, 2)]),
])
def test_memory_core_splitting(offset, size, expected):
    """The model splits an access as QEMU's memory core does for qtest (aligned pieces of at
    most 4 bytes, a tail past the block going to the board's background): the fuzzer
    predicts unaligned accesses from these pieces, and qtests/test_registers.py shows
    them on the device."""
    assert pieces(offset, size) == expected


@pytest.mark.parametrize("offset,size,expected", [
    (0x8, 4, [(0x8, 4)]),
    (0xB, 4, [(0xB, 1), (0xC, 1), (0xD, 1), (0xE, 1)]),  # four byte writes at DOORBELL-1
    (0x7, 4, [(0x7, 1), (0x8, 1), (0x9, 1), (0xA, 1)]),
    (0xA, 4, [(0xA, 2), (0xC, 2)]),
    (0x9, 2, [(0x9, 1), (0xA, 1)]),
    (-2, 4, [(-2, 2), (0, 2)]),
    (-1, 2, [(-1, 1), (0, 1)]),
])
def test_tcg_splitting(offset, size, expected):
    """cputlb.c: naturally aligned pieces of ctz(size | addr | 8) bytes (test_cpu_path.py,
    test_unaligned_word_write_does_not_ring[cpu])."""
    assert cpu_pieces(offset, size) == expected


def test_cpu_path_reads_and_rings_what_tcg_splits():
    """The CPU helper's measurements: a word at IVPOSITION-1 reads 0x00003400 from the CPU
    (the bug's silent 0 at 9) where qtest reads 0x00123400; 0x00001200 at DOORBELL-1 rings
    peer 0 vector 0x12 on both paths as is (qtest's halfword and the CPU's byte at 12 carry
    the same value), nothing once fixed."""
    assert model().read(board.IVPOSITION - 1, 4, "cpu") == 0x3400
    assert model(FIXED).read(board.IVPOSITION - 1, 4, "cpu") == 0x123400
    assert model().read(board.IVPOSITION - 1, 4, "qtest") == 0x123400
    assert "narrow-read-inside-register" not in model().diverged
    for path in ("qtest", "cpu"):
        for bugs, expected in ((AS_IS, {(0, 0x12): 1}), (FIXED, {})):
            m = Model(bugs=bugs, own_id=5)
            for _ in range(0x13):
                m.message(0, fd=True)
            m.write(board.DOORBELL - 1, 4, 0x00001200, path)
            assert m.take_fired() == expected, (path, bugs)
    m = Model(bugs=AS_IS, own_id=5)
    m.message(0, fd=True)
    with pytest.raises(Undefined):  # vector 0xABCD over qtest, 0xCD from the CPU: both >= 64
        m.write(board.DOORBELL - 1, 4, 0x00ABCD00, "cpu")


def test_registers_read_as_documented():
    """test_reserved_registers_read_zero_and_ignore_writes, test_doorbell_reads_zero,
    test_narrow_reads_at_register_base."""
    m = model()
    assert [m.read(r, 4) for r in (0, 4, 8, 12)] == [0, 0, ID, 0]
    assert m.read(board.IVPOSITION, 1) == 0x34 and m.read(board.IVPOSITION, 2) == ID
    assert m.read(board.REG_BLOCK_SIZE, 4) == 0 and m.read(-4, 4) == 0
    assert m.read(board.IVPOSITION, 8) == ID  # DOORBELL's half reads 0


def test_narrow_read_inside_register_as_is_and_fixed():
    """test_narrow_reads_inside_a_register."""
    as_is, fixed = model(), model(FIXED)
    assert as_is.read(board.IVPOSITION + 1, 1) == 0
    assert fixed.read(board.IVPOSITION + 1, 1) == 0x12
    assert fixed.read(board.IVPOSITION + 2, 2) == 0
    # split (7, 1), (8, 2), (10, 1): fixed, each piece reads the bytes it covers; as is,
    # right by luck of the halfword at IVPOSITION's own offset
    assert fixed.read(board.IVPOSITION - 1, 4) == 0x123400
    assert as_is.read(board.IVPOSITION - 1, 4) == 0x123400
    assert fixed.read(board.IVPOSITION + 1, 2) == 0x12  # (9, 1), (10, 1)
    assert "narrow-read-inside-register" in fixed.diverged and not as_is.diverged
    assert model().read(board.IVPOSITION, 4) == ID and not model().diverged


def test_doorbell_rings_exactly_one_eventfd():
    """test_guest_rings_exactly_that_host_vector, test_doorbell_halves_are_not_swapped."""
    m = model()
    for _ in range(4):
        m.message(7, fd=True)
    m.write(board.DOORBELL, 4, board.doorbell_value(7, 2))
    assert m.take_fired() == {(7, 2): 1} and m.take_fired() == {}
    m.write(board.DOORBELL, 4, board.doorbell_value(2, 7))  # unknown peer: nothing
    m.write(board.DOORBELL, 4, board.doorbell_value(7, 4))  # vector the peer lacks
    assert m.take_fired() == {} and m.pulses == 0


def test_narrow_writes_at_doorbell_ring_peer_zero_as_is_only():
    """test_narrow_write_to_doorbell_does_not_ring: as is, widened to 32 bits; fixed
    (0006), only a whole 32-bit write rings."""
    for bugs, expected in ((AS_IS, {(0, 0): 3}), (FIXED, {(0, 0): 1})):
        m = Model(bugs=bugs, own_id=5)
        m.message(0, fd=True)
        m.write(board.DOORBELL, 2, 0)
        m.write(board.DOORBELL, 1, 0)
        m.write(board.DOORBELL + 2, 2, 0)  # the upper half: nothing either way
        m.write(board.DOORBELL, 4, board.doorbell_value(0, 0))
        assert m.take_fired() == expected
        assert ("unaligned-doorbell-write" in m.diverged) == (bugs == FIXED)


def test_unaligned_write_rings_a_torn_value_as_is_only():
    """test_unaligned_word_write_does_not_ring: peer 0 vector 0x12."""
    for bugs, expected in ((AS_IS, {(0, 0x12): 1}), (FIXED, {})):
        m = Model(bugs=bugs, own_id=5)
        for _ in range(0x13):
            m.message(0, fd=True)
        m.write(board.DOORBELL - 1, 4, 0x00001200)
        assert m.take_fired() == expected
        assert ("unaligned-doorbell-write" in m.diverged) == (bugs == FIXED)


def test_self_ring_pulses_once_per_ring():
    """test_doorbell_to_self_gives_exactly_one_pulse, test_repeated_rings_are_not_lost."""
    m = model()
    for n in range(1, 4):
        m.doorbell(board.doorbell_value(ID, 0))
        assert m.pulses == n
    assert not m.spinning


def test_own_vector_above_zero_as_is_and_fixed():
    """test_host_ringing_guest_vector_pulses_irq[1..3]: as is, no pulse and a stuck eventfd
    (the main loop spins) until vector 0 is rung, which gives one pulse."""
    as_is, fixed = model(), model(FIXED)
    for m in (as_is, fixed):
        m.message(ID, fd=True)
        m.notify_own(1)
    assert (as_is.pulses, as_is.spinning) == (0, True)
    assert (fixed.pulses, fixed.spinning) == (1, False)
    as_is.notify_own(0)
    assert as_is.pulses == 1


def test_out_of_range_vectors():
    """test_doorbell_vector_64_notifies_nobody, test_doorbell_vector_far_out_of_range_is_safe:
    undefined as is for a known peer or the own id, nothing for an unknown id or fixed."""
    m, fixed = model(), model(FIXED)
    for mm in (m, fixed):
        mm.message(3, fd=True)
    for target in (ID, 3):
        for vector in (64, 0xFFFF):
            with pytest.raises(Undefined, match="doorbell-vector-unchecked"):
                m.doorbell(board.doorbell_value(target, vector))
            fixed.doorbell(board.doorbell_value(target, vector))
    m.doorbell(board.doorbell_value(0x4242, 0xFFFF))
    assert (m.take_fired(), fixed.take_fired(), fixed.pulses) == ({}, {}, 0)


def test_messages_add_and_remove_peers_and_fds():
    """test_more_than_64_vectors_are_dropped, test_disconnect_for_unknown_id_is_harmless."""
    m = model()
    base = m.held_fds()
    for _ in range(70):
        m.message(9, fd=True)
    assert m.peers[9] == board.MAX_VECTORS and m.held_fds() == base + 64
    m.message(0x4242, fd=False)  # unknown id: nothing
    m.message(9, fd=False)
    assert m.peers == {} and m.held_fds() == base
    m.message(ID | 0x70000, fd=True)  # the device keeps the low 16 bits
    assert m.own_vectors == 2
    m.disconnect()
    assert m.held_fds() == base  # the socket went, the new own vector stays


@pytest.mark.parametrize("value,alias", [
    (0x10000, 0), (0x10000 | ID, ID), (-1, 0xFFFF), (-2, 0xFFFE),
    ((1 << 63) - 1, 0xFFFF), (-(1 << 63), 0),
])
def test_out_of_range_messages_as_is_and_fixed(value, alias):
    """test_out_of_range_vector_message_is_refused, test_out_of_range_disconnect_is_refused,
    test_repeated_shm_message_is_never_written: as is the low 16 bits name a peer (or the
    own id); fixed (ivshmem-pci's process_msg) the message is refused, its fd not held."""
    as_is, fixed = model(), model(FIXED)
    base = fixed.held_fds()
    assert as_is.peer_of(value) == alias and fixed.peer_of(value) is None
    fixed.message(value, fd=True)
    assert fixed.held_fds() == base and fixed.refused == 1 and not fixed.peers
    assert "message-range-unchecked" in fixed.diverged
    as_is.message(value, fd=True)
    assert as_is.held_fds() == base + 1 and not as_is.diverged
    fixed.message(alias, fd=True)
    before = (dict(fixed.peers), fixed.own_vectors)
    fixed.message(value, fd=False)  # no disconnect of the alias (nor a crash: own id)
    assert (fixed.peers, fixed.own_vectors) == before


@pytest.mark.parametrize("value", [0, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF])
def test_ids_at_the_range_edges_are_peers(value):
    """test_ids_at_the_range_edges_are_peers: 0..65535 are ids, as is and fixed."""
    for bugs in (AS_IS, FIXED):
        m = model(bugs)
        m.message(value, fd=True)
        assert m.peers == {value: 1} and m.refused == 0 and not m.diverged
        m.doorbell(board.doorbell_value(value, 0))
        assert m.take_fired() == {(value, 0): 1}


def test_out_of_range_own_id_fails_realize():
    """test_out_of_range_own_id_fails_realize: ivshmem-pci's "invalid ID message"."""
    for own in (0x10003, -1):
        fixed = model(FIXED)
        assert fixed.greeting_outcome(Greeting(id=own)) == "error"
        assert "message-range-unchecked" in fixed.diverged
        assert model().greeting_outcome(Greeting(id=own)) == "ok"
    assert model(FIXED).greeting_outcome(Greeting(id=0xFFFF)) == "ok"


def test_disconnect_for_own_id():
    """test_disconnect_for_own_id_is_survived: undefined (crash) as is, ignored fixed."""
    with pytest.raises(Undefined, match="disconnect-own-id"):
        model().message(ID, fd=False)
    fixed = model(FIXED)
    fixed.message(ID, fd=False)
    assert fixed.own_vectors == 1 and fixed.alive


def test_greetings():
    """test_wrong_protocol_version_is_refused, test_server_closing_mid_greeting_...."""
    assert model().greeting_outcome(Greeting()) == "ok"
    assert model().greeting_outcome(Greeting(version=1)) == "ok"
    assert model(FIXED).greeting_outcome(Greeting(version=1)) == "error"
    with pytest.raises(Undefined, match="eof-mid-greeting"):
        model().greeting_outcome(Greeting(close_mid=True))
    assert model(FIXED).greeting_outcome(Greeting(close_mid=True)) == "error"


def test_bad_shared_memory_fails_realize():
    """test_server_without_shm_fd_..., test_shm_size_mismatch_..., test_non_shm_fd_...:
    no fd, a memfd of another size, a pipe or an eventfd instead of the memory: realize
    fails, as is and fixed. test_unmappable_shm_fd_is_a_clean_error: a write-sealed memfd
    of the right size fails realize fixed; as is it is accepted (shm-map-error-ignored),
    which leaves the guest no shared memory to compare: undefined."""
    for shm in SHM_FAULTS:
        assert model(FIXED).greeting_outcome(Greeting(shm=shm)) == "error", shm
        if shm != "sealed":
            assert model(AS_IS).greeting_outcome(Greeting(shm=shm)) == "error", shm
    with pytest.raises(Undefined, match="shm-map-error-ignored"):
        model(AS_IS).greeting_outcome(Greeting(shm="sealed"))


def test_own_vector_the_device_cannot_write_is_not_rung_by_doorbell():
    """An own vector that is a pipe's read end: the device's DOORBELL to it (a write to its
    fd) fails, so no pulse; a write from outside (the pipe's other end) still pulses once."""
    m = model()
    m.message(ID, fd=True, writable=False)  # vector 1
    m.doorbell(board.doorbell_value(ID, 1))
    m.doorbell(board.doorbell_value(ID, 0))
    assert m.pulses == 1 and m.mute_own == {1}
    fixed = model(FIXED)
    fixed.message(ID, fd=True, writable=False)
    fixed.notify_own(1)
    assert fixed.pulses == 1


def test_reset_keeps_everything():
    """system_reset changes nothing in the model: the device has no reset handler, so its
    vectors, peers and fds survive, as test_system_reset_keeps_id_memory_and_notifications
    shows on QEMU."""
    m = model()
    m.message(3, fd=True)
    before = (m.own_vectors, dict(m.peers), m.held_fds())
    m.reset()
    assert (m.own_vectors, m.peers, m.held_fds()) == before
