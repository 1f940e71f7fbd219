"""Signed webhooks: subscriptions, a transactional outbox and a delivery service.

The pure parts (signature, URL checks, retry schedule) import no reactor; the delivery
service (:mod:`zkserver.webhooks.service`) is thin I/O over the store and treq.
"""
