"""Reports on incidents: response KPIs (kpis.py), the post-incident review (review.py), the monthly summary
(monthly.py), their charts (charts.py) and HTML pages (html.py, templates/)."""
