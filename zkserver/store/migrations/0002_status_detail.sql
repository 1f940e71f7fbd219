-- Why a device is not (fully) working, in a few words for an operator (zkserver.devices):
-- 'CONNECT answered 6001', 'wrong comm key', 'connection refused', 'dataset unreadable: ...'.
-- NULL when all is well (and always for push devices).
ALTER TABLE devices ADD COLUMN status_detail TEXT;
