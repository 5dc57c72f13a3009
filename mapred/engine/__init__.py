"""The coordinator's engine (coordinator side): one run from plan to commit. ``runner`` drives it
(``loop``, ``pool``, ``attempts``, ``accounting``) on the decisions of the pure ``scheduler``;
``journal``, ``resume``, ``output``, ``collect``, ``progress``, ``metrics``, ``logs`` around it;
``inline`` runs a job in this one process."""
