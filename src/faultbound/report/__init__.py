"""Reports: the paper's figures (:mod:`faultbound.report.figures`) and the HTML report of one network.

The HTML report is split by concern: :mod:`~faultbound.report.build` computes its data (frozen
dataclasses, :meth:`ReportData.to_dict` is the JSON), :mod:`~faultbound.report.words` says it
(labels, the verdict and its colour), :mod:`~faultbound.report.plots` draws it (matplotlib, Agg) and
:mod:`~faultbound.report.render` renders the page (jinja2, ``templates/report.html.j2``).
"""
