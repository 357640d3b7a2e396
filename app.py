"""Chalice entry point: registers the blueprints and nothing else (rules live in chalicelib)."""

from chalice.app import Chalice

from chalicelib.api.routes import audit, auth, health, loans, payments

app = Chalice(app_name="loan-crm")
app.register_blueprint(health.bp)
app.register_blueprint(auth.bp)
app.register_blueprint(loans.bp)
app.register_blueprint(payments.bp)
app.register_blueprint(audit.bp)
