"""pipeline.startup_gc: cyclic GC paused for a launch, the launch's objects frozen after."""
from __future__ import annotations

import gc
import sys
import types

import pytest

from pipeline import startup_gc
from pipeline.cli import Command


@pytest.fixture(autouse=True)
def restore_gc():
    """Each test leaves the interpreter's collector as it found it."""
    was_enabled = gc.isenabled()
    yield
    startup_gc.resume()
    gc.unfreeze()
    (gc.enable if was_enabled else gc.disable)()


def test_a_paused_launch_collects_nothing_then_freezes_what_it_made_and_collects_again():
    gc.enable()
    gc.unfreeze()
    startup_gc.pause()
    assert not gc.isenabled() and startup_gc.paused()
    made = [[i] for i in range(1000)]  # objects of the launch
    startup_gc.resume()
    assert gc.isenabled() and not startup_gc.paused()
    assert gc.get_freeze_count() >= len(made)  # out of every later collection


def test_resume_without_pause_leaves_a_callers_collector_alone():
    gc.disable()  # the library caller's own choice
    gc.unfreeze()
    startup_gc.resume()
    assert not gc.isenabled() and gc.get_freeze_count() == 0
    startup_gc.pause()  # already off: not ours to turn back on
    startup_gc.resume()
    assert not gc.isenabled() and gc.get_freeze_count() == 0


def test_only_commands_that_end_their_launch_start_paused(monkeypatch):
    gc.enable()
    # A command without a start-up (it never calls resume) keeps collecting all along...
    assert Command('builtins:len', 'a command without start-up').main(
        [], None, own_process=True) == 0
    assert gc.isenabled()
    # ...and a command that reports start-up is paused only as the process's own command.
    seen = {}

    def launch(argv, started=None):
        seen['collecting'] = gc.isenabled()
        return 0
    monkeypatch.setitem(sys.modules, 'fake_launch', types.SimpleNamespace(main=launch))
    command = Command('fake_launch:main', 'a launch', reports_start_up=True)
    command.main([], None, own_process=False)
    assert seen['collecting'] is True
    command.main([], None, own_process=True)
    assert seen['collecting'] is False
