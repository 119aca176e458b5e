"""Members of the fetched archives (tar, tgz, zip, and the data archive of a .deb)."""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from pathlib import Path

from memcap.corpus.registry import CorpusError


def _tar_members(tar: tarfile.TarFile, pattern: str) -> dict[str, bytes]:
    """Contents of the tar members whose full name matches `pattern`, keyed by its group 1."""
    rx = re.compile(pattern)
    return {m.group(1): tar.extractfile(t).read() for t in tar
            if t.isfile() and (m := rx.fullmatch(t.name))}


def _tgz_members(path: Path, pattern: str) -> dict[str, bytes]:
    with tarfile.open(path, "r:*") as tar:
        return _tar_members(tar, pattern)


def _zip_members(path: Path, pattern: str) -> dict[str, bytes]:
    """Contents of the zip members whose full name matches `pattern`, keyed by its group 1."""
    rx = re.compile(pattern)
    with zipfile.ZipFile(path) as zf:
        return {m.group(1): zf.read(n) for n in zf.namelist() if (m := rx.fullmatch(n))}


def _deb_members(path: Path, pattern: str) -> dict[str, bytes]:
    """Like _tgz_members, for the data archive inside a .deb (an `ar` archive), without dpkg."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise CorpusError(f"{path} is not a Debian package")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        member, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        pos += 60
        if member.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(data[pos:pos + size]), mode="r:*") as tar:
                return _tar_members(tar, pattern)
        pos += size + size % 2  # members are padded to even offsets
    raise CorpusError(f"{path} has no data.tar member")
