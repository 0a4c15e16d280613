"""Adapters: each provider's API on its official SDK, behind one small interface."""

from serve_apps.providers.adapters.base import ChatAdapter, ChatCall, Completion, StreamDelta

__all__ = ["ChatAdapter", "ChatCall", "Completion", "StreamDelta"]
