-- zkserver schema, version 6: the registry of persons, their templates, their sync state.
-- (Dialect tokens and conventions: see 0001_initial.sql.)

-- devices: 'all', or the device ids with a comma before and after each (',id1,id2,').
-- origin: where the last change came from ('api', 'csv', 'import', or a device id);
-- origin_at: when (server time, UTC ISO-8601). password is never returned by the API.
CREATE TABLE persons (
    user_id    TEXT PRIMARY KEY,
    name       TEXT NOT NULL DEFAULT '',
    card       TEXT NOT NULL DEFAULT '',
    password   TEXT NOT NULL DEFAULT '',
    privilege  INTEGER NOT NULL DEFAULT 0,
    grp        TEXT NOT NULL DEFAULT '',
    active     INTEGER NOT NULL DEFAULT 1,
    devices    TEXT NOT NULL DEFAULT 'all',
    notes      TEXT NOT NULL DEFAULT '',
    origin     TEXT NOT NULL DEFAULT '',
    origin_at  TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX persons_name ON persons (name);

-- Every biometric record handed over (terminal uploads, pull reads, the API). The newest
-- row of each (user_id, kind, idx) is current = 1; older ones stay, current = 0.
-- source_table: FP, FACE, BIODATA, USERPIC, BIOPHOTO (push), pull, api.
CREATE TABLE person_templates (
    id            {{id}},
    user_id       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    idx           INTEGER NOT NULL DEFAULT 0,
    format        TEXT NOT NULL DEFAULT '',
    valid         INTEGER NOT NULL DEFAULT 1,
    duress        INTEGER NOT NULL DEFAULT 0,
    size          INTEGER NOT NULL DEFAULT 0,
    digest        TEXT NOT NULL,
    data          {{blob}} NOT NULL,
    source_table  TEXT NOT NULL DEFAULT '',
    source_device TEXT NOT NULL DEFAULT '',
    received_at   TEXT NOT NULL,
    current       INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX person_templates_user ON person_templates (user_id, kind, idx, id);

-- Where each person stands on each device. operation: upsert | delete; state: in_step |
-- pending | failed; want: the digest of what was sent (user fields + templates);
-- command_ids: JSON list of the commands that bring the device into step.
CREATE TABLE person_sync (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    operation   TEXT NOT NULL,
    state       TEXT NOT NULL,
    want        TEXT NOT NULL DEFAULT '',
    command_ids TEXT NOT NULL DEFAULT '[]',
    detail      TEXT NOT NULL DEFAULT '',
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE INDEX person_sync_device ON person_sync (device_id, state);
CREATE INDEX person_sync_state ON person_sync (state);
