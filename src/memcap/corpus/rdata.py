"""A minimal R XDR unserializer, and the reader of R lazy-load databases (Rdata.rdx/.rdb)."""

from __future__ import annotations

import gzip
import struct
import zlib
from typing import Any

from memcap.corpus.registry import CorpusError


class _RVector(list):
    """An R vector's elements, with its attributes (names, class, ...) in `attrs`."""

    attrs: dict[str, Any]


class _RReader:
    """Just enough of R's XDR unserializer for data saved by `save()` or lazy-load databases:
    NULL, symbols, pairlists, strings, logical/integer/double vectors and lists."""

    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise CorpusError("not an R serialization in XDR format")
        self.data, self.pos, self.refs = data, 2, []
        version = self._int()
        self.pos += 8  # writer version and minimal reader version
        if version == 3:
            self.pos += 4 + self._int()  # native encoding name

    def _int(self) -> int:
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def _array(self, code: str, width: int) -> tuple:
        n = self._int()
        values = struct.unpack_from(f">{n}{code}", self.data, self.pos)
        self.pos += n * width
        return values

    def read(self) -> Any:
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == 254:  # NILVALUE_SXP
            return None
        if kind == 255:  # REFSXP: an index into the symbols read so far
            return self.refs[(flags >> 8 or self._int()) - 1]
        if kind == 1:  # SYMSXP
            symbol = self.read()
            self.refs.append(symbol)
            return symbol
        if kind == 2:  # LISTSXP (pairlist) -> dict of tag to value
            if has_attr:
                self.read()
            tag = self.read() if has_tag else None
            pairs = {tag: self.read()}
            pairs.update(self.read() or {})
            return pairs
        if kind == 9:  # CHARSXP
            n = self._int()
            if n == -1:
                return None  # NA_character_
            raw = self.data[self.pos:self.pos + n]
            self.pos += n
            return raw.decode("latin-1" if flags & (1 << 14) else "utf-8")  # LATIN1_MASK
        if kind in (10, 13):  # LGLSXP, INTSXP
            vec = _RVector(self._array("i", 4))
        elif kind == 14:  # REALSXP
            vec = _RVector(self._array("d", 8))
        elif kind in (16, 19):  # STRSXP, VECSXP
            vec = _RVector(self.read() for _ in range(self._int()))
        else:
            raise CorpusError(f"unsupported R object type {kind} at byte {self.pos - 4}")
        vec.attrs = self.read() if has_attr else {}
        return vec


def _named(vec: _RVector) -> dict[str, Any]:
    return dict(zip(vec.attrs["names"], vec, strict=True))


def _r_lazyload(rdx: bytes, rdb: bytes) -> dict[str, Any]:
    """The objects of an R lazy-load database: `Rdata.rdx` (a gzipped index of name ->
    (offset, length)) and `Rdata.rdb` (per object a 4-byte length, then zlib data)."""
    index = _named(_RReader(gzip.decompress(rdx)).read())
    if list(index["compressed"]) != [1]:  # 2 and 3 would be bzip2 and xz
        raise CorpusError(f"unsupported R lazy-load compression {list(index['compressed'])}")
    out = {}
    for name, (offset, length) in _named(index["variables"]).items():
        chunk = rdb[int(offset):int(offset + length)]
        out[name] = _RReader(zlib.decompress(chunk[4:])).read()
    return out
