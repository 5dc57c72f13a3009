"""The machines a run uses (coordinator side): ``hosts`` (hosts.toml), the one ``Transport``
protocol and this machine's ``LocalTransport`` (``transport``), the SSH transport (``ssh``), and
``diagnose`` (one line for a host's missing python or full disk)."""
