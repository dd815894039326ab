"""Platform monitoring: the specification's monitoring queries over telemetry and budgets."""
