"""What runs on a host (worker side: the standard library, numpy, numba, mmh3 only): the worker
process (``main``), map and reduce tasks (``mapper``, ``reducer``, ``partition``), the host
agent (``agent``, ``agentfs``), the reducer's fetch and the shuffle daemon (``fetch``,
``rsyncd``), and workdir checks (``workdir``)."""
