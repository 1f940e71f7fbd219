-- Event retention (--retain-events): the highest event id pruned so far. A stream client
-- whose Last-Event-ID is below it missed events that are gone, and is sent a 'reset'.
CREATE TABLE event_retention (
    id             INTEGER PRIMARY KEY,
    pruned_through BIGINT NOT NULL DEFAULT 0
);
INSERT INTO event_retention (id, pruned_through) VALUES (1, 0);
