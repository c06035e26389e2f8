"""Joiner / mover / leaver events: the typed facts every later capability consumes."""

from broker.lifecycle.events import EventKind, LifecycleEvent, record_event

__all__ = ["EventKind", "LifecycleEvent", "record_event"]
