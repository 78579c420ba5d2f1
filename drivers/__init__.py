"""Device drivers: one module per device kind, found by the engine through entry points."""
