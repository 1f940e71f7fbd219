"""Signed webhooks: subscriptions, a transactional outbox and a delivery service.

The pure parts (signature, URL checks, retry schedule) import no reactor; the delivery
service (:mod:`zkserver.webhooks.service`) is thin I/O over the store and treq.
"""

from zkserver.webhooks.backoff import RetryPolicy
from zkserver.webhooks.signing import sign, signed_headers, verify
from zkserver.webhooks.urls import BadWebhookURL, check_webhook_url

__all__ = ["BadWebhookURL", "RetryPolicy", "check_webhook_url", "sign", "signed_headers", "verify"]
