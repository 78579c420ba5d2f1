"""A lab of benches coordinated over an MQTT 5 broker (mosquitto): agents, jobs, leases, events.

See docs/lab.md for the topic tree and the job protocol. Nothing here is needed by ``bench run``.
"""
