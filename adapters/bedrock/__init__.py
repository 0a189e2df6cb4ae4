"""Amazon Bedrock Converse / ConverseStream: JSON bodies, the AWS
event-stream binary framing, and SigV4 request signing."""

from adapters.bedrock.codec import BedrockCodec

__all__ = ["BedrockCodec"]
