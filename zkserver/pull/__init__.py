"""Pull devices: the binary ZK protocol on port 4370 (see :mod:`zkserver.pull.codec`)."""
