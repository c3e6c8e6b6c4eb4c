"""The admin pages' building blocks: plain tables and secrets shown once."""

from __future__ import annotations

from dash import html

from dashboard.components import data_table, secret_notice


class TestDataTable:
    def test_basic(self) -> None:
        button = html.Button("Revoke", id="r")
        wrap = data_table(["User", "Role", ""], [["ada", "admin", button], ["bob", "clinician", ""]])
        assert wrap.className == "cm-table-wrap"
        table = wrap.children
        assert isinstance(table, html.Table)
        assert table.className == "table cm-table"
        head, body = table.children
        assert [th.children for th in head.children.children] == ["User", "Role", ""]
        assert [[td.children for td in tr.children] for tr in body.children] == [
            ["ada", "admin", button],
            ["bob", "clinician", ""],
        ]

    def test_edge_cases(self) -> None:
        assert data_table(["User"], [["ada"]], table_id="users-table").children.id == "users-table"
        assert not hasattr(data_table(["User"], [["ada"]]).children, "id")
        empty = data_table(["Client"], [], table_id="t", empty="No tokens yet.")
        assert empty.className == "cm-empty"
        assert empty.children == "No tokens yet."
        assert data_table(["User"], []).children == "None yet."


class TestSecretNotice:
    def test_basic(self) -> None:
        notice = secret_notice("Copy it now:", "s3cret", element_id="device-token")
        text, secret = notice.children
        assert text.children == "Copy it now:"
        assert (secret.children, secret.className, secret.id) == ("s3cret", "cm-secret", "device-token")
