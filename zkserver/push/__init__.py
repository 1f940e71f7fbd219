"""Push terminals (ADMS / iclock HTTP protocol): the pure protocol core lives in
:mod:`zkserver.push.iclock`; the Klein resource in :mod:`zkserver.push.resource`."""
