"""Signed /live tokens: issue, verify, refuse forged and expired ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from ingest.live_tokens import (
    ExpiredLiveTokenError,
    InvalidLiveTokenError,
    LiveClaims,
    issue_live_token,
    verify_live_token,
)

SECRET = "0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000.0


def _reencode(token: str, **changes: object) -> str:
    """The token with its claims changed and its signature kept (a forgery)."""
    body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    raw = json.dumps(claims).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature


class TestIssueLiveToken:
    def test_basic(self) -> None:
        token = issue_live_token(SECRET, 7, [3, 1, 3], 60, now=NOW)
        claims = verify_live_token(SECRET, token, NOW + 59)
        assert claims == LiveClaims(
            user_id=7, patient_ids=frozenset({1, 3}), issued_at=NOW, expires_at=NOW + 60
        )
        assert claims.allows(1)
        assert not claims.allows(2)

    def test_edge_cases(self) -> None:
        empty = verify_live_token(SECRET, issue_live_token(SECRET, 0, [], 1, now=NOW), NOW)
        assert empty.patient_ids == frozenset()
        assert issue_live_token(SECRET.encode(), 1, [1], now=NOW) == issue_live_token(SECRET, 1, [1], now=NOW)
        fresh = issue_live_token(SECRET, 1, [1])  # default: the current time
        assert "=" not in fresh
        assert fresh.count(".") == 1

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`secret` must be at least 16 bytes"):
            issue_live_token("short", 1, [1], now=NOW)
        with pytest.raises(ValueError, match="`ttl_s` must be in"):
            issue_live_token(SECRET, 1, [1], 0, now=NOW)
        with pytest.raises(ValueError, match="`ttl_s` must be in"):
            issue_live_token(SECRET, 1, [1], 86_400, now=NOW)
        with pytest.raises(ValueError, match="non-negative integers"):
            issue_live_token(SECRET, 1, [-1], now=NOW)
        with pytest.raises(ValueError, match="non-negative integers"):
            issue_live_token(SECRET, True, [1], now=NOW)


class TestVerifyLiveToken:
    def test_basic(self) -> None:
        token = issue_live_token(SECRET, 5, [9], 30, now=NOW)
        assert verify_live_token(SECRET, token, NOW).user_id == 5

    def test_edge_cases(self) -> None:
        token = issue_live_token(SECRET, 5, [9], 30, now=NOW)
        assert verify_live_token(SECRET, token, NOW + 29.999).expires_at == NOW + 30
        with pytest.raises(ExpiredLiveTokenError, match="expired"):
            verify_live_token(SECRET, token, NOW + 30)

    @pytest.mark.parametrize(
        ("token", "match"),
        [
            (None, "required"),
            ("", "required"),
            (42, "required"),
            ("no-dot", "malformed"),
            ("a.b.c", "malformed"),
            ("é.x", "malformed"),
            ("abc.!!!", "signature"),
            ("abc." + "A" * 43, "does not match"),
        ],
    )
    def test_exceptions(self, token: object, match: str) -> None:
        with pytest.raises(InvalidLiveTokenError, match=match):
            verify_live_token(SECRET, token, NOW)

    def test_forgeries_are_refused(self) -> None:
        token = issue_live_token(SECRET, 5, [9], 30, now=NOW)
        with pytest.raises(InvalidLiveTokenError, match="does not match"):
            verify_live_token("another-secret-of-32-characters!", token, NOW)
        with pytest.raises(InvalidLiveTokenError, match="does not match"):
            verify_live_token(SECRET, _reencode(token, pat=[9, 10]), NOW)
        with pytest.raises(InvalidLiveTokenError, match="does not match"):
            verify_live_token(SECRET, _reencode(token, exp=NOW + 10_000), NOW)
        with pytest.raises(InvalidLiveTokenError, match="signature"):
            verify_live_token(SECRET, token[:-2], NOW)
        with pytest.raises(InvalidLiveTokenError, match="does not match"):
            verify_live_token(SECRET, token[:-4], NOW)

    def test_signed_garbage_is_refused(self) -> None:
        """Claims of the wrong shape are refused even under a valid signature."""

        def signed(claims: object) -> str:
            body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            mac = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest()
            return body + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

        good = {"v": 1, "sub": 1, "pat": [1], "iat": NOW, "exp": NOW + 5}
        assert verify_live_token(SECRET, signed(good), NOW).patient_ids == frozenset({1})
        for bad, match in [
            ([1, 2], "version"),
            ({**good, "v": 2}, "version"),
            ({**good, "sub": "1"}, "wrong types"),
            ({**good, "pat": ["1"]}, "wrong types"),
            ({**good, "exp": True}, "`exp` claim"),
        ]:
            with pytest.raises(InvalidLiveTokenError, match=match):
                verify_live_token(SECRET, signed(bad), NOW)
