"""Runtime services: connect/start/stop/query, registration, the Pulsar adapter, settings, the process harness."""
