"""Alerts: rules on predictions and on pipeline events, an outbox that neither duplicates nor
loses a message, and the SMS (Twilio), e-mail (SendGrid) and webhook channels.

``rules`` (what a rule says, when it holds), ``policy`` (throttle, quiet hours, ids),
``incidents`` (one message per incident), ``schema`` and ``store`` (the database, migrated by
Alembic), ``evaluate`` (an event in, alerts in the outbox, one transaction).
"""
