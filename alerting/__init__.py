"""tapwatch.alerting: verdicts over threshold → suppression → LIME explanation → EVE alerts → sinks.

Modules (imported on demand; importing this package imports nothing heavy):

- :mod:`~tapwatch.alerting.alert`: the :class:`~tapwatch.alerting.alert.Alert` record and its Suricata EVE form;
- :mod:`~tapwatch.alerting.signatures`: stable ``signature_id`` per (model family, class), severity, category;
- :mod:`~tapwatch.alerting.suppress`: Suricata ``threshold.config`` suppression and thresholds;
- :mod:`~tapwatch.alerting.sinks`, :mod:`~tapwatch.alerting.netsinks`: stdout, JSON lines, Redis stream,
  syslog (RFC 5424, UDP and TCP), HTTP webhook;
- :mod:`~tapwatch.alerting.explain`, :mod:`~tapwatch.alerting.budget`: LIME over ONNX Runtime, within a budget;
- :mod:`~tapwatch.alerting.alerter`: the consumer-group loop, independent of Redis (works on ``MemoryBus``);
- :mod:`~tapwatch.alerting.service`, :mod:`~tapwatch.alerting.cli`: wiring and ``tapwatch alerter``.

See ``docs/alerts.md`` for the alert format, the signature scheme and the ``threshold.config`` vocabulary.
"""
