-- Typed device commands with a lifecycle (zkserver.commands).
-- status: queued -> sent -> done | failed | expired | cancelled.
-- type: a zkserver.commands.spec type ('raw' for commands queued as one text line);
-- fields: its JSON fields; command: the iclock line for push terminals ('' for pull);
-- attempts: how often it was sent; expires_at: a queued command expires after this time.
-- created_at is the time it was queued (queued_at in the API).
ALTER TABLE commands ADD COLUMN batch_id TEXT;
ALTER TABLE commands ADD COLUMN type TEXT NOT NULL DEFAULT 'raw';
ALTER TABLE commands ADD COLUMN fields TEXT NOT NULL DEFAULT '{}';
ALTER TABLE commands ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN expires_at TEXT;
CREATE INDEX commands_batch ON commands (batch_id, id);
CREATE INDEX commands_status ON commands (status, id);
