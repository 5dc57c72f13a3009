"""LAN hosts over SSH (coordinator side): ``remote.SSHTransport`` and ``open_transports``, built of
connections and host keys (``connect``, ``config``, ``knownhosts``), the OpenSSH master
(``master``), the host agent's client (``agentclient``, ``agentrequests``), liveness
(``liveness``), workers (``worker``, ``workers``), shard staging (``shards``, ``staging``) and
the shuffle (``shuffle``, ``relay``)."""
