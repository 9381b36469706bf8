"""Operating a node: the admin listener (a WebSocket JSON protocol, the dashboard, Prometheus ``/metrics``,
``/health`` and ``/ready``), the events operators subscribe to, and the ``python -m trio_sos admin`` client.
The protocol is documented in ``docs/admin-protocol.md``."""
