"""Reports: the paper's figures (:mod:`faultbound.report.figures`)."""
