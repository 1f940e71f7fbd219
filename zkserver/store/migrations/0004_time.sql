-- Time you can trust: the instant of each punch, suspect clocks, device clock offsets.
-- timestamp_utc is 'YYYY-MM-DDTHH:MM:SSZ' ('' when the local time is not a real time):
-- fixed width, so text order is time order. The Python step of this migration
-- (0004_time.py) fills the three punch columns of existing rows and the device counts,
-- then creates the indexes on them (after the fill: faster than updating them row by row).
ALTER TABLE punches ADD COLUMN timestamp_utc TEXT NOT NULL DEFAULT '';
ALTER TABLE punches ADD COLUMN time_ambiguous INTEGER NOT NULL DEFAULT 0;
ALTER TABLE punches ADD COLUMN suspect_time TEXT;
ALTER TABLE devices ADD COLUMN clock_offset_s INTEGER;
ALTER TABLE devices ADD COLUMN suspect_punches INTEGER NOT NULL DEFAULT 0;
