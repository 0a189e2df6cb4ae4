"""The contract every Nexus component shares: events, streams, config, publisher."""
