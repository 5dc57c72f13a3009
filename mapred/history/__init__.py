"""Runs after the fact (coordinator side): the run directories and their journal (``runs``,
``model``, ``build``) for ``mapred runs/show``, and the HTML report (``report``, ``html``,
``timeline``)."""
