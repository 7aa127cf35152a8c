"""Grafana dashboards (the JSON files beside this module) and the code that ships them."""
