-- zkserver schema, version 1. Shared by SQLite and PostgreSQL.
-- Dialect tokens (the only differences, substituted by zkserver.store.sql.render):
--   {{id}}   BIGSERIAL PRIMARY KEY | INTEGER PRIMARY KEY AUTOINCREMENT
--   {{blob}} BYTEA                 | BLOB
-- Every statement ends with ';' at the end of a line (the file is split there).
-- Device times are TEXT 'YYYY-MM-DD HH:MM:SS' as the terminal sent them; server times
-- (*_at, last_seen) are UTC ISO-8601 text; JSON columns are TEXT.

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    serial_number TEXT NOT NULL DEFAULT '',
    name          TEXT NOT NULL DEFAULT '',
    kind          TEXT NOT NULL DEFAULT 'push',
    status        TEXT NOT NULL DEFAULT 'pending',
    approved      INTEGER NOT NULL DEFAULT 0,
    timezone      TEXT NOT NULL DEFAULT '',
    host          TEXT NOT NULL DEFAULT '',
    port          INTEGER NOT NULL DEFAULT 4370,
    comm_key      BIGINT NOT NULL DEFAULT 0,
    transport     TEXT NOT NULL DEFAULT 'tcp',
    last_seen     TEXT,
    info          TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL
);
CREATE UNIQUE INDEX devices_serial_number ON devices (serial_number) WHERE serial_number <> '';
CREATE UNIQUE INDEX devices_host_port ON devices (host, port) WHERE host <> '';

-- serial_number is the device's serial (or its id while it has none): the dedup key.
CREATE TABLE punches (
    id            {{id}},
    device_id     TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    timestamp     TEXT NOT NULL,
    status        INTEGER NOT NULL,
    verify        INTEGER NOT NULL,
    workcode      TEXT NOT NULL DEFAULT '',
    raw           TEXT NOT NULL DEFAULT '{}',
    received_at   TEXT NOT NULL,
    UNIQUE (serial_number, user_id, timestamp)
);
CREATE INDEX punches_timestamp ON punches (timestamp, id);
CREATE INDEX punches_device_timestamp ON punches (device_id, timestamp, id);
CREATE INDEX punches_user_timestamp ON punches (user_id, timestamp, id);

-- The SSE stream. Ids are allocated and committed in one order (see store/sql.py).
CREATE TABLE events (
    id            {{id}},
    type          TEXT NOT NULL,
    serial_number TEXT NOT NULL DEFAULT '',
    payload       TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE users (
    device_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL DEFAULT '',
    privilege  INTEGER NOT NULL DEFAULT 0,
    card       TEXT NOT NULL DEFAULT '',
    password   TEXT NOT NULL DEFAULT '',
    grp        TEXT NOT NULL DEFAULT '',
    uid        INTEGER,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (device_id, user_id)
);
CREATE INDEX users_user_id ON users (user_id);

CREATE TABLE operlog (
    id          {{id}},
    device_id   TEXT NOT NULL,
    op          TEXT NOT NULL DEFAULT '',
    operator    TEXT NOT NULL DEFAULT '',
    timestamp   TEXT NOT NULL DEFAULT '',
    obj         TEXT NOT NULL DEFAULT '',
    vals        TEXT NOT NULL DEFAULT '[]',
    raw         TEXT NOT NULL DEFAULT '',
    received_at TEXT NOT NULL,
    UNIQUE (device_id, timestamp, op, operator, obj, vals)
);

CREATE TABLE photos (
    id          {{id}},
    device_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL DEFAULT '',
    timestamp   TEXT NOT NULL DEFAULT '',
    filename    TEXT NOT NULL,
    content     {{blob}} NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (device_id, filename)
);
CREATE INDEX photos_punch ON photos (device_id, user_id, timestamp);

CREATE TABLE rejected (
    id            {{id}},
    serial_number TEXT NOT NULL DEFAULT '',
    source        TEXT NOT NULL DEFAULT '',
    raw           TEXT NOT NULL DEFAULT '',
    reason        TEXT NOT NULL DEFAULT '',
    received_at   TEXT NOT NULL
);
CREATE INDEX rejected_serial_number ON rejected (serial_number, id);

CREATE TABLE commands (
    id          {{id}},
    device_id   TEXT NOT NULL,
    command     TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'queued',
    return_code INTEGER,
    result      TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    sent_at     TEXT,
    finished_at TEXT
);
CREATE INDEX commands_device_status ON commands (device_id, status, id);
