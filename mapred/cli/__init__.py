"""The command line (coordinator side): ``mapred run`` and its options (``main``), ``mapred
runs/show/report`` (``runs``), ``mapred hosts check/setup`` (``hosts``). The only place that
prints to the user or exits."""
