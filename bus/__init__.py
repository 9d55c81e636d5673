"""tapwatch.bus: the streams between stages, on Redis or in memory, and the one consumer loop.

- :mod:`~tapwatch.bus.streams`: stream names, the :class:`~tapwatch.bus.streams.Bus` protocol, ``MemoryBus`` and
  ``RedisBus`` (the only modules of the installed package that import ``redis`` live in this room);
- :mod:`~tapwatch.bus.publish`: the sensor's publisher (buffering and backoff while Redis is down);
- :mod:`~tapwatch.bus.bounded`: the bounded in-memory bus of the embedded pipeline (``detect``/``run``);
- :mod:`~tapwatch.bus.stats`: consumer-group gauges read from Redis.
"""
