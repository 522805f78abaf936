"""The engine: the processes of a run and the messages between them.

The master's loop (``runner``, ``faults``) applies a load model (``load``)
through a pool of worker processes (``pool``, ``worker``, ``slots``,
``counters``) under a monitor process (``monitor``, ``sampler``,
``thresholds``), gathers what they measured (``outcome``) and stops on a
signal (``signals``). ``messages`` is everything that crosses a pipe;
``schedule`` the open model's arrivals; ``_proc`` and ``_procfs`` the Linux
process helpers.
"""
