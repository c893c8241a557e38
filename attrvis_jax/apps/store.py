"""The result store of a sweep: one SQLite file that records every finished item.

Why SQLite: a transaction is atomic and durable across a crash or `kill -9` (the journal rolls an
interrupted write back), so an item is either fully recorded or absent — never half-written, never
twice (the item id is the primary key). A batch of items is committed in one transaction after its
pictures are on disk, so a resumed sweep redoes exactly the batch that was running.

The store also pins the sweep's fingerprint (model, weights, method, key and the stage configs):
resuming with different settings would mix incomparable results, so it is refused with a clear error.
Only results pin: a store that holds no item yet takes the settings of whoever opens it next (a
first session that failed before finishing an item decided nothing). A store that cannot be read
is one error naming it (sweepdir.reading).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterable

from attrvis_jax.errors import AttrvisError
from attrvis_jax.apps.sweepdir import reading

# Columns of an item row, in order; scripts read these names from results.csv: keep them stable.
COLUMNS = (
    ("id", "TEXT PRIMARY KEY"),
    ("image", "TEXT"),
    ("label", "TEXT"),
    ("target", "TEXT"),
    ("target_index", "INTEGER"),
    ("target_name", "TEXT"),
    ("layer", "TEXT"),
    ("perturbation", "TEXT"),
    ("seed", "INTEGER"),
    ("pcc", "REAL"),
    ("pcc_raw", "REAL"),
    ("pcc_directed", "REAL"),
    ("top5_hit", "INTEGER"),
    ("target_rank", "INTEGER"),
    ("mask_area", "REAL"),
    ("beta", "REAL"),
    ("lambda0", "REAL"),
    ("final_loss", "REAL"),
    ("finite", "INTEGER"),
    ("picture", "TEXT"),
    ("mask", "TEXT"),
    ("batch", "INTEGER"),
    ("session", "INTEGER"),
    ("finished_at", "REAL"),
    # added since stores were first written (ALTER TABLE on open; NULL in rows stored before): the
    # judge's verdict (judge: its name, NULL where no judge has judged the item) and the groups
    ("judge", "TEXT"),
    ("judge_rank", "INTEGER"),
    ("judge_top5", "INTEGER"),
    ("judge_photo_rank", "INTEGER"),
    ("judge_gray_rank", "INTEGER"),
    ("groups", "TEXT"),  # JSON: one entry per channel group of the item (NULL: a sweep without groups)
)
NAMES = tuple(name for name, _ in COLUMNS)
ADDED = ("judge", "judge_rank", "judge_top5", "judge_photo_rank", "judge_gray_rank", "groups")  # may be absent from a row
JUDGE_COLUMNS = ("judge", "judge_rank", "judge_top5", "judge_photo_rank", "judge_gray_rank")
BOOLEAN = ("top5_hit", "finite", "judge_top5")
JSON = ("groups",)
REDO = "redoes the items it recorded (pictures and attributions in the folder are kept)"


class ResultStore:
    """Items of one sweep, keyed by item id. Open it as a context manager or call `close()`."""

    def __init__(self, path: Path, fingerprint: dict, upgrade: Callable[[dict], dict] | None = None):
        # upgrade: maps a fingerprint an older version stored to this version's form
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fingerprint = plain(fingerprint)
        with reading(self.path, REDO):
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("PRAGMA synchronous=FULL")
            with self.db:
                self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
                self.db.execute(f"CREATE TABLE IF NOT EXISTS items ({', '.join(f'{n} {t}' for n, t in COLUMNS)})")
                have = {row[1] for row in self.db.execute("PRAGMA table_info(items)")}
                for name, kind in COLUMNS:  # a store of an earlier version: its rows get NULL there
                    if name not in have:
                        self.db.execute(f"ALTER TABLE items ADD COLUMN {name} {kind}")
            stored = self._meta("fingerprint")
            stored = None if stored is None else json.loads(stored)
            count = self.count()
        if stored is not None and upgrade is not None:
            stored = plain(upgrade(stored))
        if stored is not None and stored != fingerprint and count:
            self.db.close()
            raise other_settings(self.path.parent, differences(stored, fingerprint))
        with self.db:  # pinned anew when it holds no item yet, or in this version's form
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (json.dumps(fingerprint),))
        sessions = int(self._meta("sessions") or 0) + 1
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('sessions', ?)", (str(sessions),))
        self.session = sessions

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def _meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def done(self) -> set[str]:
        with reading(self.path, REDO):
            return {row[0] for row in self.db.execute("SELECT id FROM items")}

    def add(self, rows: Iterable[dict]) -> None:
        """Record finished items in one transaction (all of them, or none after a crash)."""
        now = time.time()
        values = [tuple(_value(row, name, now, self.session) for name in NAMES) for row in rows]
        with self.db:
            self.db.executemany(f"INSERT INTO items VALUES ({', '.join('?' * len(NAMES))})", values)

    def update(self, rows: Iterable[dict], names: Iterable[str]) -> None:
        """Set the columns `names` of recorded items (by id) in one transaction: a verdict added later."""
        names = list(names)
        values = [tuple(_value(row, name, 0.0, self.session) for name in names) + (row["id"],) for row in rows]
        with self.db:
            self.db.executemany(f"UPDATE items SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?", values)

    def rows(self, ids: Iterable[str] | None = None) -> list[dict]:
        """Recorded items as dicts (booleans restored): all of them ordered by id, or only `ids`, in
        the order given (a sweep's plan order: layers as listed, then perturbations, seeds)."""
        out = []
        with reading(self.path, REDO):
            for values in self.db.execute(f"SELECT {', '.join(NAMES)} FROM items ORDER BY id"):
                row = dict(zip(NAMES, values))
                for name in BOOLEAN:
                    row[name] = None if row[name] is None else bool(row[name])
                for name in JSON:
                    row[name] = None if row[name] is None else json.loads(row[name])
                out.append(row)
        if ids is not None:
            by_id = {row["id"]: row for row in out}
            out = [by_id[i] for i in dict.fromkeys(ids) if i in by_id]
        return out

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def peek(path: Path) -> tuple[dict | None, set[str]]:
    """(the fingerprint a store pins or None, the ids of its items), read without creating or
    pinning anything; (None, empty) where there is no store."""
    path = Path(path)
    if not path.exists():
        return None, set()
    with reading(path, REDO):
        db = sqlite3.connect(path, timeout=60)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            stored = db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone() if "meta" in tables else None
            ids = {row[0] for row in db.execute("SELECT id FROM items")} if "items" in tables else set()
        finally:
            db.close()
        return (None if stored is None else json.loads(stored[0])), ids


def plain(settings: dict) -> dict:
    """Settings as JSON gives them back (tuples become lists, keys sorted): comparable with a stored copy."""
    return json.loads(json.dumps(settings, sort_keys=True))


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The settings that differ, by name; one level into tables ("attribution.steps")."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and not prefix:
            out += differences(a, b, f"{k}.")
        elif a != b:
            out.append(prefix + k)
    return out


def other_settings(folder: Path, changed, where: str = "") -> AttrvisError:
    """The error for a folder whose results were made under other settings (`changed`: their names)."""
    return AttrvisError(f"{folder} holds a sweep with other settings ({', '.join(changed)} differ{where}): its "
                        "results would not be comparable; use another --out directory, or rerun with its "
                        "settings to resume it")


def _value(row: dict, name: str, now: float, session: int):
    if name == "finished_at":
        return now
    if name == "session":
        return session
    if name not in row:
        if name in ADDED:
            return None
        raise KeyError(f"item row lacks {name!r}")
    value = row[name]
    if value is None:
        return None
    if name in JSON:
        return json.dumps(value)
    return int(value) if name in BOOLEAN else value
