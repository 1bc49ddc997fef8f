"""State in Azure Table Storage: anomalies, run health, and (later) checkpoints and the outbox."""
