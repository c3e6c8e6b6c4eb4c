"""Look and feel in a real browser: Bootstrap and the themes, keyboard use, the admin's user actions.

Screenshots of each page in the dark and the light theme go to
``artifacts/screenshots/`` (``*_dark.png``, ``*_light.png``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from selenium.webdriver.common.keys import Keys
from sqlalchemy import select

from storage import AuditEntry, CaregiverAssignment, Database, User

pytestmark = pytest.mark.browser

DARK_BG = "rgb(11, 15, 20)"
LIGHT_BG = "rgb(243, 245, 248)"
ALARM_HIGH = "rgb(224, 0, 27)"


def _style(duo: Any, selector: str, prop: str) -> str:
    return str(
        duo.driver.execute_script(
            "return getComputedStyle(document.querySelector(arguments[0])).getPropertyValue(arguments[1]);",
            selector,
            prop,
        )
    )


def _theme(duo: Any) -> str:
    return str(duo.driver.execute_script("return document.documentElement.getAttribute('data-bs-theme')"))


class TestTheme:
    def test_login_page_is_styled_in_the_stored_theme(
        self, dash_duo: Any, app_factory: Any, screenshot: Any
    ) -> None:
        dash_duo.start_server(app_factory(), navigate=False)
        dash_duo.driver.get(dash_duo.server.url + "/login")
        dash_duo.wait_for_element("#login-button")
        assert _theme(dash_duo) == "dark"
        assert _style(dash_duo, "body", "background-color") == DARK_BG
        assert _style(dash_duo, "#username", "display") == "block"  # Bootstrap's .form-control
        assert _style(dash_duo, "#login-button", "background-color") == "rgb(31, 111, 235)"  # .btn-ack
        screenshot(dash_duo, "login_dark")
        dash_duo.driver.execute_script("localStorage.setItem('cm-theme', 'light')")
        dash_duo.driver.get(dash_duo.server.url + "/login?failed=1")
        dash_duo.find_element("#username").send_keys("nobody")
        dash_duo.find_element("#password").send_keys("not the password")
        dash_duo.find_element("#login-button").click()
        dash_duo.wait_for_element("#login-error")
        assert _theme(dash_duo) == "light"
        assert _style(dash_duo, "body", "background-color") == LIGHT_BG
        screenshot(dash_duo, "login_light")

    def test_toggle_by_keyboard_is_remembered(
        self,
        dash_duo: Any,
        start_logged_in: Any,
        seeded: Any,
        screenshot: Any,
        wait_until: Any,
    ) -> None:
        start_logged_in("clin")
        dash_duo.wait_for_element(f"#tile-{seeded.bob} .cm-alarm.alarm-high")
        assert _theme(dash_duo) == "dark"
        assert _style(dash_duo, "body", "background-color") == DARK_BG
        assert _style(dash_duo, f"#tile-{seeded.bob} .cm-alarm", "background-color") == ALARM_HIGH
        screenshot(dash_duo, "central_dark")
        dash_duo.driver.execute_script("document.activeElement && document.activeElement.blur()")
        dash_duo.find_element("body").send_keys(Keys.TAB)
        assert (
            dash_duo.driver.execute_script("return document.activeElement.textContent") == "Skip to content"
        )
        dash_duo.driver.get(dash_duo.server.url + "/alarms")
        dash_duo.wait_for_element(f"#alarm-row-{seeded.bob_alarm}")
        dash_duo.wait_for_text_to_equal(".cm-navlink[aria-current='page']", "Alarms")  # where you are
        screenshot(dash_duo, "alarms_dark")
        toggle = dash_duo.find_element("#cm-theme-toggle")
        assert toggle.tag_name == "button"  # reachable with Tab, pressed with Enter or Space
        toggle.send_keys(Keys.ENTER)
        assert wait_until(lambda: _theme(dash_duo) == "light")
        assert toggle.get_attribute("aria-pressed") == "true"
        assert toggle.text == "Dark"
        assert _style(dash_duo, "body", "background-color") == LIGHT_BG
        assert wait_until(  # monitor.css wins over Bootstrap (after .btn's colour transition)
            lambda: _style(dash_duo, ".btn-ack", "background-color") == "rgb(11, 94, 215)"
        )
        assert _style(dash_duo, f"#alarm-row-{seeded.bob_alarm} .cm-alarm", "background-color") == ALARM_HIGH
        screenshot(dash_duo, "alarms_light")
        dash_duo.driver.get(dash_duo.server.url + "/")  # a new page load keeps the choice
        dash_duo.wait_for_element(f"#tile-{seeded.bob} .cm-alarm.alarm-high")
        assert _theme(dash_duo) == "light"
        time.sleep(0.5)
        screenshot(dash_duo, "central_light")
        dash_duo.find_element("#cm-theme-toggle").send_keys(Keys.SPACE)
        assert wait_until(lambda: _theme(dash_duo) == "dark")
        assert dash_duo.driver.execute_script("return localStorage.getItem('cm-theme')") == "dark"

    def test_figures_follow_the_theme(
        self,
        dash_duo: Any,
        start_logged_in: Any,
        seeded: Any,
        screenshot: Any,
        wait_until: Any,
    ) -> None:
        start_logged_in("clin", next_path="/history")
        dash_duo.select_dcc_dropdown("#history-patient", value="Ada Lovelace")
        dash_duo.find_element("#history-show").click()
        dash_duo.wait_for_element("#history-graph .js-plotly-plot")
        frame = "const gd = document.querySelector('#history-graph .js-plotly-plot');"

        def colours() -> Any:
            return dash_duo.driver.execute_script(
                frame + "return [gd.layout.paper_bgcolor, gd.layout.font.color, gd.data[0].line.color];"
            )

        assert colours() == ["#10151c", "#e8edf2", "#7fdbff"]
        dash_duo.find_element("#cm-theme-toggle").click()
        assert wait_until(lambda: colours() == ["#ffffff", "#1b1f24", "#0b6e99"]), colours()
        time.sleep(0.5)
        screenshot(dash_duo, "history_light")
        dash_duo.find_element("#cm-theme-toggle").click()
        assert wait_until(lambda: colours() == ["#10151c", "#e8edf2", "#7fdbff"]), colours()


class TestAdminUsers:
    def test_disable_reset_password_and_unassign(
        self,
        dash_duo: Any,
        start_logged_in: Any,
        seeded: Any,
        db: Database,
        screenshot: Any,
        wait_until: Any,
    ) -> None:
        start_logged_in("admin", next_path="/admin")
        dash_duo.wait_for_element("#users-table")
        assert dash_duo.find_elements("#users-table [aria-label='Disable admin']") == []  # not yourself
        dash_duo.find_element("[aria-label='Disable care']").click()
        dash_duo.wait_for_contains_text("#admin-message", "User disabled.")
        dash_duo.wait_for_element("[aria-label='Enable care']")
        dash_duo.wait_for_contains_text("#audit-table", "user.disable")
        dash_duo.select_dcc_dropdown("#edit-user", value="clin (clinician)")
        assert wait_until(lambda: dash_duo.find_element("#edit-ward").get_attribute("value") == "")
        dash_duo.find_element("#edit-ward").send_keys("ICU")
        dash_duo.find_element("#save-user").click()
        dash_duo.wait_for_contains_text("#admin-message", "User updated.")
        dash_duo.find_element("#edit-password").send_keys("short")
        dash_duo.find_element("#reset-password").click()
        dash_duo.wait_for_contains_text("#admin-message", "at least 10 characters")
        dash_duo.find_element("#edit-password").send_keys(" but now long enough")
        dash_duo.find_element("#reset-password").click()
        dash_duo.wait_for_contains_text("#admin-message", "Password reset.")
        assert wait_until(lambda: dash_duo.find_element("#edit-password").get_attribute("value") == "")
        dash_duo.find_element("[aria-label='Remove care from Ada Lovelace']").click()
        dash_duo.wait_for_contains_text("#admin-message", "Assignment removed.")
        dash_duo.wait_for_contains_text("#audit-table", "assignment.delete")
        screenshot(dash_duo, "admin_dark")
        dash_duo.find_element("#cm-theme-toggle").click()
        assert wait_until(lambda: _theme(dash_duo) == "light")
        time.sleep(0.5)  # Bootstrap's .btn colour transitions
        screenshot(dash_duo, "admin_light")
        with db.session() as session:
            users = {u.username: u for u in session.scalars(select(User))}
            assert not users["care"].is_active
            assert users["clin"].ward == "ICU"
            assert session.get(CaregiverAssignment, (seeded.caregiver, seeded.ada)) is None
            actions = [
                a.action for a in session.scalars(select(AuditEntry).where(AuditEntry.actor == "user:1"))
            ]
        assert {"user.disable", "user.update", "user.password_reset", "assignment.delete"} <= set(actions)
