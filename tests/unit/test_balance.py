"""`gateway.balance.Seats`: which gateway process may take the next connection."""

from __future__ import annotations

import os
import time

import pytest

from gateway import balance
from gateway.balance import Seats


def test_a_process_accepts_up_to_one_connection_more_than_the_least_busy() -> None:
    seats = Seats(3)
    for index, count in enumerate([0, 4, 5]):
        seats.take(index)
        seats.publish(count)
    seats.take(1)  # now this process is number 1 (4 connections), and says so
    seats.publish(4)
    assert seats.may_accept(0) and seats.may_accept(1)  # the least busy other holds 0
    assert not seats.may_accept(2)


def test_a_process_that_stopped_publishing_does_not_hold_the_others_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seats = Seats(2)
    seats.take(1)
    seats.publish(0)  # process 1: idle, and then silent (a blocked event loop)
    seats.take(0)
    assert not seats.may_accept(5)
    later = time.monotonic() + balance.STALE_AFTER + 0.1
    monkeypatch.setattr(balance.time, "monotonic", lambda: later)
    assert seats.may_accept(5)


def test_the_counts_are_shared_with_forked_processes() -> None:
    seats = Seats(2)
    seats.take(0)
    pid = os.fork()
    if pid == 0:  # the child publishes 7 connections as process 1
        seats.take(1)
        seats.publish(7)
        os._exit(0)
    os.waitpid(pid, 0)
    assert seats.may_accept(8) and not seats.may_accept(9)


def test_a_process_that_never_published_is_not_compared() -> None:
    seats = Seats(2)  # process 1 forked but still starting: nothing published yet
    seats.take(0)
    assert seats.may_accept(10)
