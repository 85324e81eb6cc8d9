"""Peer-to-peer file transfer over WebRTC DataChannels with a multi-process pipeline."""

__version__ = "0.1.0"
