"""The part state file: saved in place while a transfer runs, checked on load."""

from __future__ import annotations

import json
import os
from pathlib import Path

from modeldepot.download._parts import STATE_PAGE, PartState, StateFile, part_path, state_path

URL = "http://127.0.0.1:1/m.bin"


def _state(final: Path, size: int = 1000, done: tuple[tuple[int, int], ...] = ((0, 100),)) -> PartState:
    part_path(final).write_bytes(b"\0" * size)
    st = PartState(url=URL, size=size, etag='"e1"')
    for a, b in done:
        st.add(a, b)
    return st


def test_in_place_saves_keep_one_inode_and_load_back(tmp_path: Path) -> None:
    final = tmp_path / "m.bin"
    st = _state(final)
    writer = StateFile(final)
    writer.save(st, durable=True)  # the first save creates the file (temp + rename)
    inode = os.stat(state_path(final)).st_ino
    for end in range(200, 1000, 100):
        st.add(0, end)
        writer.save(st)
        assert os.stat(state_path(final)).st_ino == inode  # rewritten in place, no rename
    writer.close()
    assert os.path.getsize(state_path(final)) == STATE_PAGE
    loaded = PartState.load(final, URL)
    assert loaded is not None and loaded.done == [[0, 900]] and loaded.etag == '"e1"'


def test_a_shrinking_state_leaves_no_stale_tail(tmp_path: Path) -> None:
    final = tmp_path / "m.bin"
    st = _state(final, size=10_000, done=tuple((i, i + 5) for i in range(0, 10_000, 10)))
    writer = StateFile(final)
    st.save(final)
    assert len(st.encode()) > STATE_PAGE  # too big for one page
    writer.save(st)  # so it is renamed into place
    st.add(0, 10_000)  # now one range: fits a page, but the file on disk is larger
    writer.save(st)
    writer.save(st)
    writer.close()
    loaded = PartState.load(final, URL)
    assert loaded is not None and loaded.done == [[0, 10_000]]


def test_a_state_whose_crc_does_not_match_is_not_trusted(tmp_path: Path) -> None:
    final = tmp_path / "m.bin"
    st = _state(final)
    st.save(final)
    text = state_path(final).read_text()
    assert '"crc":' in text
    # A torn or damaged save claiming more bytes than were written: refetch rather than trust it.
    state_path(final).write_text(text.replace("[[0,100]]", "[[0,900]]"))
    assert PartState.load(final, URL) is None


def test_a_state_written_before_crcs_existed_still_loads(tmp_path: Path) -> None:
    final = tmp_path / "m.bin"
    st = _state(final)
    state_path(final).write_text(json.dumps(st.to_json()))
    loaded = PartState.load(final, URL)
    assert loaded is not None and loaded.done == [[0, 100]]
