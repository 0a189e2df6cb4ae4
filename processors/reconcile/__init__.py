"""Requests that will never have an outcome (their node died), recorded as
aborted and their quota reservations released (see ``reconciler``)."""

from processors.reconcile.embed import start_reconciler
from processors.reconcile.reconciler import Reconciler, ReconcileSettings

__all__ = ["ReconcileSettings", "Reconciler", "start_reconciler"]
