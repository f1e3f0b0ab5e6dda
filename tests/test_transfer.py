"""Records as JSON (RunRecord.to_json/from_json), export_run/import_run and from_url."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flux import InvalidRunStateError, RunNotFoundError
from flux.records import RunRecord, SignalRecord
from flux.status import RunStatus
from flux.storage import MemoryStorage, SQLiteStorage, Storage, export_run, from_url, import_run
from flux.testing._factories import at, full_run, run_record


def test_every_field_of_a_run_round_trips_through_json_text() -> None:
    """to_json gives JSON text's worth of values; from_json gives back an equal record."""
    run = full_run()
    text = json.dumps(run.to_json())
    assert RunRecord.from_json(json.loads(text)) == run
    signal = SignalRecord(id=3, run_id=run.id, name="go", payload={"a": [1]}, created_at=at(9), consumed_by=2)
    assert SignalRecord.from_json(json.loads(json.dumps(signal.to_json()))) == signal


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": 5}, "'id' must be str"),
        ({"status": "sleeping"}, "'status' is 'sleeping'; use one of"),
        ({"created_at": "yesterday"}, "'created_at' is not an ISO 8601 time"),
        ({"created_at": "2030-01-01T00:00:00"}, "no timezone"),
        ({"labels": {"k": 1}}, "'labels' must map strings to strings"),
        ({"steps": [{"seq": 0}]}, "step record field 'step' is missing"),
        ({"steps": [{"seq": True, "step": "a", "status": "completed"}]}, "'seq' must be int"),
    ],
)
def test_malformed_run_documents_say_which_field_is_wrong(change: dict[str, Any], message: str) -> None:
    """Each malformed field raises ValueError naming it."""
    raw = {**full_run().to_json(), **change}
    with pytest.raises(ValueError, match=message):
        RunRecord.from_json(raw)
    with pytest.raises(ValueError, match="must be a JSON object"):
        RunRecord.from_json([raw])


@pytest.mark.parametrize("target", ["memory", "sqlite"])
async def test_export_then_import_into_another_database(
    storage: Storage, tmp_path: Path, target: str
) -> None:
    """A run with steps, labels and consumed and waiting signals arrives whole under its id,
    without its owner; a second import of the same id is refused."""
    run = run_record("r1", status=RunStatus.SUSPENDED, labels={"tenant": "acme"}, owner="h/1/2/x",
                     lease_expires_at=at(60), steps=full_run().steps)  # fmt: skip
    await storage.save(run)
    await storage.add_signal("r1", "approved", {"by": "ann"}, at(10))
    await storage.take_signal("r1", "approved", 3)
    await storage.add_signal("r1", "later", None, at(11))
    document = json.loads(json.dumps(await export_run(storage, "r1")))

    other: Storage = MemoryStorage() if target == "memory" else SQLiteStorage(tmp_path / "other.db")
    await other.init()
    try:
        await import_run(other, document)
        loaded = await other.load("r1")
        assert loaded is not None
        original = await storage.load("r1")
        assert original is not None and original.wake_at == at(11)
        assert loaded.to_json() == original.to_json() | {"owner": None, "lease_expires_at": None}
        signals = [(s.name, s.payload, s.created_at, s.consumed_by) for s in await other.list_signals("r1")]
        assert signals == [("approved", {"by": "ann"}, at(10), 3), ("later", None, at(11), None)]
        with pytest.raises(InvalidRunStateError, match="already exists"):
            await import_run(other, document)
    finally:
        await other.close()


async def test_import_refuses_malformed_documents_and_writes_nothing(storage: Storage) -> None:
    """Not an export, a bad run inside, a signal of another run: ValueError, nothing stored."""
    good = {"format": "flux-run/1", "run": run_record("r1").to_json(), "signals": []}
    bad_signal = {"id": 1, "run_id": "r2", "name": "x", "created_at": at(0).isoformat()}
    for document, message in [
        ([], "not a flux run export"),
        ({**good, "format": "v0"}, "not a flux run export"),
        ({**good, "run": {"id": "r1"}}, "field 'workflow' is missing"),
        ({**good, "signals": {}}, "'signals' must be a list"),
        ({**good, "signals": [bad_signal]}, "belongs to run 'r2'"),
    ]:
        with pytest.raises(ValueError, match=message):
            await import_run(storage, document)
    assert await storage.list() == []
    with pytest.raises(RunNotFoundError):
        await export_run(storage, "r1")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///flux.db", "flux.db"),
        ("sqlite:////tmp/x/flux.db", "/tmp/x/flux.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("runs/flux.db", "runs/flux.db"),
        (Path("/abs/flux.db"), "/abs/flux.db"),
        ("SQLITE:///Flux.db", "Flux.db"),
    ],
)
def test_from_url_opens_sqlite_urls_and_bare_paths(url: str, path: str) -> None:
    """sqlite:/// URLs and bare paths name a SQLite file."""
    storage = from_url(url)
    assert isinstance(storage, SQLiteStorage)
    assert storage.path == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("sqlit:///flux.db", r"unknown storage URL scheme 'sqlit' \(did you mean sqlite://\?\)"),
        ("mysql://db/x", "use one of: postgres://, postgresql://, sqlite://"),
        ("sqlite://flux.db", "names no file"),
        ("sqlite:///flux.db?mode=ro", "query string"),
    ],
)
def test_from_url_explains_bad_urls(url: str, message: str) -> None:
    """Each bad URL raises ValueError saying what to write instead."""
    with pytest.raises(ValueError, match=message):
        from_url(url)
