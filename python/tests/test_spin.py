"""Unit tests of the worker's idle spin (_spin.py), on a clock the tests move by hand."""

import io
import unittest
from contextlib import redirect_stderr

from ferroserve._spin import DEFAULT_US, IdleSpin, seconds_from_env


class Clock:
    """A clock that advances by `step` seconds each time it is read."""

    def __init__(self, step=0.0):
        self.now = 100.0
        self.step = step

    def __call__(self):
        self.now += self.step
        return self.now


class IdleSpinTest(unittest.TestCase):
    def test_spins_until_a_frame_can_be_read(self):
        polls = []
        spin = IdleSpin(0.001, lambda: len(polls) >= 3 or polls.append(1), Clock(step=1e-6))
        spin.idle()
        self.assertEqual(len(polls), 3)

    def test_gives_up_when_its_time_is_up(self):
        clock = Clock(step=10e-6)
        polls = []
        spin = IdleSpin(0.001, lambda: polls.append(1), clock)
        started = clock.now
        spin.idle()
        # About 100 polls of 10 µs each: the spin ended at its deadline, not before or long after.
        self.assertGreater(len(polls), 90)
        self.assertLess(len(polls), 110)
        self.assertLess(clock.now - started, 0.0012)

    def test_a_long_gap_turns_it_off_and_a_short_one_on(self):
        clock = Clock(step=10e-6)
        polls = []
        spin = IdleSpin(0.001, lambda: polls.append(1) or False, clock)
        spin.idle()  # on at first: spins to its deadline
        clock.now += 0.5  # the next frame comes long after
        spin.woke()
        self.assertFalse(spin.on)
        polls.clear()
        spin.idle()  # sparse traffic: no spin at all
        self.assertEqual(polls, [])
        clock.now += 0.0002  # the next frame came soon: spinning would have caught it
        spin.woke()
        self.assertTrue(spin.on)

    def test_frames_while_busy_leave_it_as_it_was(self):
        spin = IdleSpin(0.001, lambda: True, Clock())
        spin.on = False
        spin.woke()  # not after an idle spell: nothing measured
        self.assertFalse(spin.on)


class SecondsFromEnvTest(unittest.TestCase):
    def test_default_zero_and_a_value(self):
        self.assertEqual(seconds_from_env({}), DEFAULT_US / 1e6)
        self.assertEqual(seconds_from_env({"FERROSERVE_WORKER_SPIN_US": "0"}), 0.0)
        self.assertEqual(seconds_from_env({"FERROSERVE_WORKER_SPIN_US": "50"}), 50e-6)

    def test_a_bad_value_is_reported_and_the_default_used(self):
        for raw in ("fast", "-1", "1e3", "100001"):
            said = io.StringIO()
            with redirect_stderr(said):
                seconds = seconds_from_env({"FERROSERVE_WORKER_SPIN_US": raw})
            self.assertEqual(seconds, DEFAULT_US / 1e6, raw)
            self.assertIn(f"FERROSERVE_WORKER_SPIN_US='{raw}' is not a number of microseconds", said.getvalue())


if __name__ == "__main__":
    unittest.main()
