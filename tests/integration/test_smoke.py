from __future__ import annotations

import json

from chalice.test import Client

import app as app_module
from chalicelib.domain.roles import Role
from chalicelib.wiring import services


def test_health_and_login(moto_stack: str, tmp_path) -> None:
    services().auth.add_user("admin1", "s3cret-pass", Role.ADMIN)
    with Client(app_module.app, project_dir=str(tmp_path)) as client:
        r = client.http.get("/health")
        print(r.status_code, r.body)
        r = client.http.post(
            "/api/v1/auth/token",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"username": "admin1", "password": "s3cret-pass"}),
        )
        print(r.status_code, r.body)
        token = json.loads(r.body)["access_token"]
        h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = {
            "borrower": {"name": "Asha", "phone": "9876543210"},
            "principal_paise": 10000000,
            "annual_rate_bps": 1200,
            "tenure_months": 12,
            "disbursement_date": "2026-01-01",
            "first_due_date": "2026-02-05",
        }
        r = client.http.post("/api/v1/loans", headers=h, body=json.dumps(body))
        print(r.status_code, r.body[:600])
        loan = json.loads(r.body)
        r = client.http.patch(f"/api/v1/loans/{loan['loan_id']}", headers=h, body=json.dumps({"borrower": {"DPD": 0}}))
        print(r.status_code, r.body)
        r = client.http.patch(f"/api/v1/loans/{loan['loan_id']}", headers=h, body=json.dumps({"notes": "hi"}))
        print(r.status_code, r.body[:300])
        r = client.http.get("/api/v1/loans?limit=1", headers=h)
        print(r.status_code, r.body[:200])
        r = client.http.get(f"/api/v1/audit?entity_id={loan['loan_id']}", headers=h)
        print(r.status_code, r.body[:1500])
        r = client.http.get("/api/v1/audit", headers=h)
        print(r.status_code, len(json.loads(r.body)["items"]))
