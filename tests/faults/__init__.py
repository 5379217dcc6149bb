"""Fault injection: SIGKILLs of ``mlib apply`` at random points of a mixed scenario (``run.py``,
``harness.py``), a full space, two applies at once and server faults (``test_faults.py``)."""
