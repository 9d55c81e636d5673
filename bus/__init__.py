"""tapwatch.bus: the streams between stages, on Redis or in memory, and the one consumer loop.

- :mod:`~tapwatch.bus.streams`: stream names, the :class:`~tapwatch.bus.streams.Bus` protocol, ``MemoryBus`` and
  ``RedisBus`` (the only modules of the installed package that import ``redis`` live in this room);
- :mod:`~tapwatch.bus.consumer`: the one consumer loop (read, claim, backoff, a lost group, drain at stop) that
  the inference worker and the alerter run with their own handlers;
- :mod:`~tapwatch.bus.publish`: the sensor's publisher (buffering and backoff while Redis is down);
- :mod:`~tapwatch.bus.bounded`: the bounded in-memory bus of the embedded pipeline (``detect``/``run``);
- :mod:`~tapwatch.bus.stats`: consumer-group gauges read from Redis.
"""
