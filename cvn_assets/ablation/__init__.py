"""The ablation stage (pure): variants and guardrails, the focal objective, training, calibration,
metrics, one cell's evaluation, the gates, the report, the sweep's identity."""
