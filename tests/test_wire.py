"""The worker protocol's messages survive the wire, and unknown ones are not fatal."""

from __future__ import annotations

import json

import pytest

from mapred import wire


@pytest.mark.parametrize("msg", [
    wire.Init("job.py", 4, 7, "/s", {"k": "v"}, 2, None, True, "ab", {"h.py": "cd"},
              {"rel": "a", "offset": 0, "data": "x"}),
    wire.MapRequest("m00001", "m00001.a1", [wire.Piece("/c/a", "a", 0, 9, False, 100, 9, 5)]),
    wire.ReduceRequest("r00000", "r00000.a1", 0, ["/x", {"url": "rsync://h/x", "host": "h"}],
                       "/out/part-00000"),
    wire.Preload(), wire.Quit(), wire.Ready(12, "numba", ["w"]), wire.InitFailed("bad", None),
    wire.Progress("m1.a1", 10), wire.Fetched("r1.a1", 3),
    wire.Done("m1.a1", 0.5, {"0": ["/r/0"]}, {"pairs": 2}, 1 << 20),
    wire.Failed("m1.a1", "ValueError: x", "Traceback..."), wire.Alive(),
])
def test_every_message_decodes_to_itself(msg: wire.Message) -> None:
    line = wire.encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert wire.decode(line) == msg


def test_the_wire_names_the_kind_and_the_fields() -> None:
    obj = json.loads(wire.encode(wire.Progress("m1.a1", 10)))
    assert obj == {"ev": "progress", "attempt": "m1.a1", "bytes": 10}
    piece = json.loads(wire.encode(wire.MapRequest("m1", "m1.a1", [
        wire.Piece("/p", "r", 1, 2, True)])))["pieces"][0]
    assert piece == {"path": "/p", "rel": "r", "start": 1, "end": 2, "gzip": True,
                     "origin": None, "size": None, "mtime_ns": None}


def test_unknown_kinds_and_fields() -> None:
    assert wire.decode(b'{"op": "frobnicate"}\n') is None
    assert wire.decode(b'{"ev": "alive", "extra": 1}') == wire.Alive()
    with pytest.raises(ValueError):
        wire.decode(b"[1, 2]")
    with pytest.raises(ValueError):
        wire.decode(b"not json")


def test_a_piece_knows_where_it_is_in_the_corpus() -> None:
    assert wire.Piece("/cache/x", "a.txt", 0, 10, False, origin=500).describe() == \
        "a.txt bytes 500-510"
    assert wire.Piece("/c/a.txt", "a.txt", 20, 30, False).first == 20
