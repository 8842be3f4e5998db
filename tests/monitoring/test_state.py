"""The serving state every replica shares, on SQLite and on a real PostgreSQL: runtime items read
by cursor exactly once and in order, one id per item across writers, the champion pointer."""

from __future__ import annotations

import threading
import time

import pytest

from fusionrec.monitoring.state import ItemExists, ServingState, image_format
from fusionrec.monitoring.store import FeedbackStore

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@pytest.fixture
def state(db_url: str):
    with FeedbackStore(db_url) as store:
        yield ServingState(store)


def test_runtime_items_round_trip_and_read_by_cursor(state: ServingState) -> None:
    first = state.add_item("n1", title="Red", text="Red. very red", fields={"title": "Red", "overview": "very red"},
                           image=PNG)
    second = state.add_item("n2", text="plain")
    assert second > first
    (item,) = state.items_since(first)
    assert (item.id, item.item_id, item.text, item.fields, item.image) == (second, "n2", "plain", None, None)
    one, two = state.items_since(0)
    assert one.fields == {"title": "Red", "overview": "very red"} and one.image == PNG
    assert one.image_format == "png" and one.title == "Red" and one.origin
    assert state.items_since(second) == []
    frame = state.items_frame()
    assert frame["item_id"].tolist() == ["n1", "n2"] and frame.loc[0, "image"] == PNG


def test_given_vectors_round_trip(state: ServingState) -> None:
    state.add_item("v1", vectors={"vectors:audio": [0.5, -1.25, 3.0]})
    state.add_item("v2", text="no vectors")
    one, two = state.items_since(0)
    assert one.vectors == {"vectors:audio": [0.5, -1.25, 3.0]} and two.vectors is None
    assert state.items_frame()["vectors"].tolist() == [{"vectors:audio": [0.5, -1.25, 3.0]}, None]


def test_a_database_from_before_vectors_gets_the_column(db_url: str) -> None:
    import sqlalchemy as sa

    old = sa.MetaData()  # the table as it was before items could carry vectors
    table = sa.Table("runtime_items", old, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                     sa.Column("item_id", sa.String(256), nullable=False, unique=True),
                     sa.Column("title", sa.Text, nullable=False), sa.Column("text", sa.Text, nullable=False),
                     sa.Column("fields", sa.Text), sa.Column("image", sa.LargeBinary),
                     sa.Column("image_format", sa.String(16)), sa.Column("added_at", sa.Float, nullable=False),
                     sa.Column("origin", sa.String(256), nullable=False))
    with FeedbackStore(db_url) as store:
        with store.engine.begin() as conn:
            old.create_all(conn)
            conn.execute(table.insert(), {"item_id": "before", "title": "", "text": "old", "added_at": 1.0,
                                          "origin": "x"})
        state = ServingState(store)
        state.add_item("after", vectors={"vectors:audio": [1.0, 2.0]})
        before, after = state.items_since(0)
        assert (before.item_id, before.vectors, after.vectors) == ("before", None, {"vectors:audio": [1.0, 2.0]})


def test_an_item_id_is_taken_once(state: ServingState) -> None:
    state.add_item("dup", text="first")
    with pytest.raises(ItemExists, match="dup"):
        state.add_item("dup", text="second")
    assert [it.text for it in state.items_since(0)] == ["first"]


def test_concurrent_writers_never_hide_an_item_from_a_cursor_reader(db_url: str) -> None:
    """Replicas insert at once while another polls by id: it must see every item exactly once
    (ids that commit out of order would be skipped for good)."""
    stores = [FeedbackStore(db_url) for _ in range(7)]
    writers, reader = [ServingState(s) for s in stores[:6]], ServingState(stores[6])
    seen: list[str] = []
    done = threading.Event()

    def write(n: int) -> None:
        for k in range(25):
            writers[n].add_item(f"w{n}-{k}", text=f"item {n} {k}")

    def read() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            for item in reader.items_since(cursor):
                assert item.id > cursor
                seen.append(item.item_id)
                cursor = item.id
            if finished:
                return
            time.sleep(0.002)

    poller = threading.Thread(target=read)
    poller.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    done.set()
    poller.join()
    for s in stores:
        s.close()
    assert sorted(seen) == sorted(f"w{n}-{k}" for n in range(6) for k in range(25))


def test_the_champion_pointer_moves_and_keeps_its_history(state: ServingState) -> None:
    assert state.champion() is None
    first = state.set_champion("v1+1", "/models/v1", source="runs/a")
    second = state.set_champion("v2+2", "s3://bucket/models/v2", source="runs/b")
    assert state.champion() == second and second.id > first.id
    assert [c.uri for c in state.champions()] == ["/models/v1", "s3://bucket/models/v2"]
    rollback = state.set_champion(first.model_version, first.uri, source="manual rollback")
    assert state.champion() == rollback and rollback.uri == "/models/v1"


def test_two_stores_on_a_new_database_create_the_tables_once(db_url: str) -> None:
    errors: list[BaseException] = []

    def open_state() -> None:
        try:
            with FeedbackStore(db_url) as store:
                ServingState(store).items_since(0)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=open_state) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


@pytest.mark.parametrize(("data", "fmt"), [(PNG, "png"), (b"\xff\xd8\xff\xe0", "jpeg"),
                                            (b"RIFF\0\0\0\0WEBPVP8 ", "webp"), (b"nope", None)])
def test_image_format_from_magic_bytes(data: bytes, fmt: str | None) -> None:
    assert image_format(data) == fmt
