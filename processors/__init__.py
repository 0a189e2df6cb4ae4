"""Workers that consume JetStream and maintain state: quota, audit, SIEM, alerting."""
