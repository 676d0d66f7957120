"""Announce an anycast address for Pgpool-II only while pgpool and its primary are usable."""

__version__ = "0.5.0"
