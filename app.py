"""Chalice entry point: registers the blueprints and nothing else (rules live in chalicelib)."""

from chalice.app import Chalice

from chalicelib.api.http import unmatched
from chalicelib.api.routes import (
    audit,
    auth,
    contract,
    dashboard,
    health,
    jobs,
    loans,
    payments,
    reassignments,
    reconciliation,
    scores,
    users,
)
from chalicelib.jobs.digest import bp as digest_job_bp
from chalicelib.jobs.lambda_handlers import bp as dpd_job_bp

app = Chalice(app_name="loan-crm")
app.register_blueprint(health.bp)
app.register_blueprint(auth.bp)
app.register_blueprint(loans.bp)
app.register_blueprint(payments.bp)
app.register_blueprint(audit.bp)
app.register_blueprint(jobs.bp)
app.register_blueprint(users.bp)
app.register_blueprint(reassignments.bp)
app.register_blueprint(dashboard.bp)
app.register_blueprint(reconciliation.bp)
app.register_blueprint(scores.bp)
app.register_blueprint(contract.bp)
app.register_blueprint(dpd_job_bp)
app.register_blueprint(digest_job_bp)
# Catch-all routes: a path no route above matches is 404 NOT_FOUND in the error shape.
app.register_blueprint(unmatched)
