"""Delivery of task notifications: content, signatures, retries, senders and the dispatcher.

See docs/notifications.md. ``content``, ``signing`` and ``retry`` are pure; ``senders`` speaks
SMTP and HTTP; ``store`` holds the SQL; ``dispatcher`` claims due rows and delivers them.
"""
