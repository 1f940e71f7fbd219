-- zkserver schema, version 5: webhook subscriptions, their outbox, device alerts.
-- (Dialect tokens and conventions: see 0001_initial.sql.)

-- types/devices: ',attendance,door,' (a comma before and after each name; '' = all).
CREATE TABLE webhooks (
    id          {{id}},
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    types       TEXT NOT NULL DEFAULT '',
    devices     TEXT NOT NULL DEFAULT '',
    batch_max   INTEGER NOT NULL DEFAULT 1,
    active      INTEGER NOT NULL DEFAULT 1,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- The outbox: one row per (subscription, event), written in the event's transaction.
CREATE TABLE webhook_deliveries (
    id               {{id}},
    webhook_id       BIGINT NOT NULL,
    event_id         BIGINT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_attempt_at TEXT,
    last_attempt_at  TEXT,
    next_attempt_at  TEXT NOT NULL,
    response_code    INTEGER,
    error            TEXT NOT NULL DEFAULT '',
    created_at       TEXT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (webhook_id, status, event_id);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status, next_attempt_at);

-- Device health alerts that are open now (a row per device and alert).
CREATE TABLE device_alerts (
    device_id    TEXT NOT NULL,
    alert        TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '',
    opened_at    TEXT NOT NULL,
    last_sent_at TEXT NOT NULL,
    PRIMARY KEY (device_id, alert)
);
