"""Dash pages, loaded by the pages API when :func:`dashboard.create_app` builds an app.

Never import these modules yourself (tests included): Dash executes them
per app, and importing them again would register their callbacks twice.
"""
