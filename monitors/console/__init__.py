"""The operator console: on-call reads an anomaly, acknowledges it or suppresses it.

``ids`` names anomalies in URLs, ``security`` reads the signed-in principal and checks CSRF
tokens, ``timeline`` and ``pages`` render HTML (pure), and ``routes`` handles the requests.
"""
