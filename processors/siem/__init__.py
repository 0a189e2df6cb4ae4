"""SIEM forwarding: every configured sink gets its own durable JetStream
consumer; records go out as RFC 5424 syslog (JSON or CEF) over TCP/TLS/UDP,
Splunk HEC, Elastic _bulk or a JSON webhook."""

from processors.siem.embed import start_siem
from processors.siem.forwarder import SiemForwarder, consumer_name

__all__ = ["SiemForwarder", "consumer_name", "start_siem"]
