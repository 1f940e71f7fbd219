-- The text encoding of a device's names, set by an operator (zkserver.device_text):
-- '' automatic (UTF-8, else GBK, else latin-1), else a codec name such as 'cp1252'.
ALTER TABLE devices ADD COLUMN encoding TEXT NOT NULL DEFAULT '';
