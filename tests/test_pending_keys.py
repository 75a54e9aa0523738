"""Systemlink's pending keys on a game worker: replace, single use, cancel, expiry."""

from __future__ import annotations

import time

from workers.pending_keys import PendingKeys

KEY_A, KEY_B = b"a" * 64, b"b" * 64


def test_a_pushed_key_admits_once():
    keys = PendingKeys(ttl=60)
    keys.push(7, KEY_A, parameter=1)
    assert keys.consume(7, KEY_A) is True
    assert keys.consume(7, KEY_A) is False


def test_a_wrong_key_leaves_the_pending_one_for_the_real_player():
    keys = PendingKeys(ttl=60)
    keys.push(7, KEY_A, parameter=1)
    for _ in range(100):  # a stranger who knows only the AccountNo, guessing
        assert keys.consume(7, KEY_B) is False
    assert 7 in keys
    assert keys.consume(7, KEY_A) is True
    assert 7 not in keys


def test_a_newer_push_replaces_the_older():
    keys = PendingKeys(ttl=60)
    keys.push(7, KEY_A, parameter=1)
    keys.push(7, KEY_B, parameter=2)
    assert len(keys) == 1
    assert keys.consume(7, KEY_B) is True


def test_cancel_removes_only_the_push_it_names():
    keys = PendingKeys(ttl=60)
    keys.push(7, KEY_A, parameter=1)
    keys.push(7, KEY_B, parameter=2)
    assert keys.cancel(7, parameter=1) is False  # the older attempt's cancel
    assert 7 in keys
    assert keys.cancel(7, parameter=2) is True
    assert 7 not in keys


def test_expired_keys_do_not_admit_and_are_swept():
    keys = PendingKeys(ttl=0.5)
    keys.push(7, KEY_A, parameter=1)
    keys.push(8, KEY_A, parameter=2)
    later = time.monotonic() + 1.0
    assert keys.expire(later) == [7, 8]
    assert len(keys) == 0
    keys.push(9, KEY_A, parameter=3)
    keys._keys[9] = keys._keys[9]._replace(expires_at=time.monotonic() - 1)
    assert keys.consume(9, KEY_A) is False
