"""The result store of a sweep: one SQLite file that records every finished item.

Why SQLite: a transaction is atomic and durable across a crash or `kill -9` (the journal rolls an
interrupted write back), so an item is either fully recorded or absent — never half-written, never
twice (the item id is the primary key). A batch of items is committed in one transaction after its
pictures are on disk, so a resumed sweep redoes exactly the batch that was running.

The store also pins the sweep's fingerprint (model, weights, method, key and the stage configs):
resuming with different settings would mix incomparable results, so it is refused with a clear error.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterable

from attrvis_jax.errors import AttrvisError

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
)
NAMES = tuple(name for name, _ in COLUMNS)
BOOLEAN = ("top5_hit", "finite")


class ResultStore:
    """Items of one sweep, keyed by item id. Open it as a context manager or call `close()`."""

    def __init__(self, path: Path, fingerprint: dict, upgrade: Callable[[dict], dict] | None = None):
        # upgrade: maps a fingerprint an older version stored to this version's form
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA synchronous=FULL")
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS items ({', '.join(f'{n} {t}' for n, t in COLUMNS)})")
        stored = self._meta("fingerprint")
        wanted = json.dumps(fingerprint, sort_keys=True)
        if stored is None:
            with self.db:
                self.db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (wanted,))
        elif stored != wanted and upgrade is not None and json.dumps(upgrade(json.loads(stored)), sort_keys=True) == wanted:
            with self.db:
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (wanted,))
        elif stored != wanted:
            old, new = json.loads(stored), fingerprint
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            self.db.close()
            raise AttrvisError(f"{self.path.parent} holds a sweep with other settings ({', '.join(changed)} "
                               "differ): its results would not be comparable; use another --out directory")
        sessions = int(self._meta("sessions") or 0) + 1
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('sessions', ?)", (str(sessions),))
        self.session = sessions

    def _meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def done(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT id FROM items")}

    def add(self, rows: Iterable[dict]) -> None:
        """Record finished items in one transaction (all of them, or none after a crash)."""
        now = time.time()
        values = [tuple(_value(row, name, now, self.session) for name in NAMES) for row in rows]
        with self.db:
            self.db.executemany(f"INSERT INTO items VALUES ({', '.join('?' * len(NAMES))})", values)

    def rows(self, ids: Iterable[str] | None = None) -> list[dict]:
        """Recorded items as dicts (booleans restored): all of them ordered by id, or only `ids`, in
        the order given (a sweep's plan order: layers as listed, then perturbations, seeds)."""
        out = []
        for values in self.db.execute(f"SELECT {', '.join(NAMES)} FROM items ORDER BY id"):
            row = dict(zip(NAMES, values))
            for name in BOOLEAN:
                row[name] = bool(row[name])
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


def _value(row: dict, name: str, now: float, session: int):
    if name == "finished_at":
        return now
    if name == "session":
        return session
    if name not in row:
        raise KeyError(f"item row lacks {name!r}")
    value = row[name]
    return int(value) if name in BOOLEAN else value
