"""mapred: map/reduce jobs over large text corpora on this machine or a few LAN hosts."""

__version__ = "0.2.0"
