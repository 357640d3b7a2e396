"""Bulk reassignment of loans between collectors (docs/rules.md, "Users and offboarding")."""

from __future__ import annotations

from chalice.app import Blueprint

bp = Blueprint(__name__)
