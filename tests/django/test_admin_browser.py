"""chunkwise's admin pages in a real browser, as Django tests its own admin:
``StaticLiveServerTestCase`` serving the lab project, Debian's Chromium driven headless by
Selenium, real logins (a superuser, a staff user with view only, one who may also mark
failed rows for retry, one without permission, a user who is not staff).

``CHUNKWISE_ADMIN_PICTURES=docs`` saves the pages' pictures for the docs
(docs/how-to/admin.md shows them): the runs list, a run's page, its failed rows.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.test import Client, override_settings

from tests.django.test_admin_pg import admin_database
from tests.support.pgserver import PgServer

pytestmark = pytest.mark.postgres

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed (Debian's chromium and "
                "chromium-driver; scripts/setup installs them)", pytrace=False)

PASSWORD = "a-long-passphrase"


@pytest.fixture(scope="module", autouse=True)
def admin_db(pg: PgServer, lab_template: str, django_setup: None) -> Iterator[None]:
    """The live server's database (before the class starts it): the lab's, plus the
    admin's tables."""
    with admin_database(pg, lab_template):
        yield


def runs() -> None:
    """Five runs as a team would see them: one done with failed rows, verified; one of
    four shards running; one halted on its error budget; one interrupted going backward;
    one deferred by a migrate."""
    from django.utils import timezone

    from chunkwise.django.models import Checkpoint, FailedRow

    now = timezone.now()

    def ago(**delta: float) -> datetime.datetime:
        return now - datetime.timedelta(**delta)

    def run(app: str, migration: str, shards: int = 1, **fields: Any) -> list[Checkpoint]:
        made = []
        for shard in range(shards):
            values = {"model": f"{app}.Item", "key_field": "id", "planned": True,
                      "shard_count": shards, **fields}
            values = {k: (v(shard) if callable(v) else v) for k, v in values.items()}
            started = values.pop("started_at", now)
            checkpoint = Checkpoint.objects.create(app_label=app, migration=migration,
                                                   operation=0, shard=shard, **values)
            Checkpoint.objects.filter(pk=checkpoint.pk).update(started_at=started)
            made.append(checkpoint)
        return made

    [done] = run("lab", "0002_bump_items", rows_estimated=3000, rows_processed=2997,
                 failed_rows=3, batches=6, lock_wait_seconds=0.84, state="done",
                 owner="ci-runner-7 pid 4121", last_key="3000", high_water_key="3000",
                 started_at=ago(minutes=14), heartbeat_at=ago(minutes=2),
                 completed_at=ago(minutes=2), rows_remaining=3, rows_missed=0,
                 verified_at=ago(minutes=2))
    for key in (137, 1500, 2999):
        FailedRow.objects.create(checkpoint=done, key=str(key), error_class="ValueError",
                                 message=f"cannot bump item {key}: payload says raise")
    run("shop", "0002_customer_status", shards=4, rows_estimated=1_250_000,
        rows_processed=lambda shard: 700_000 + 40_000 * shard, batches=140,
        lock_wait_seconds=lambda shard: 1.5 + shard, state="running",
        owner="DataMigration shop/customer-status", last_key=lambda s: str(s * 1_250_000
                                                                          + 700_000),
        high_water_key=lambda shard: str((shard + 1) * 1_250_000), started_at=ago(minutes=21),
        heartbeat_at=ago(seconds=2))
    [halted] = run("billing", "0003_recompute_totals", rows_estimated=120_000,
                   rows_processed=41_000, failed_rows=101, batches=41, lock_wait_seconds=12.5,
                   state="halted", owner="DataMigration billing/totals",
                   message="HALTED (FailedRowsExceeded): 101 rows failed, more than "
                           "haltOn.failedRows=100", started_at=ago(hours=3),
                   heartbeat_at=ago(hours=2))
    FailedRow.objects.bulk_create(
        FailedRow(checkpoint=halted, key=str(9000 + i), error_class="IntegrityError",
                  message='duplicate key value violates unique constraint "billing_total_key"')
        for i in range(101))
    run("lab", "0003_setbased_items", direction="backward", rows_estimated=50_000,
        rows_processed=12_000, batches=12, state="interrupted", owner="laptop pid 99",
        started_at=ago(days=1), heartbeat_at=ago(days=1))
    run("later", "0002_fill_labels", rows_estimated=8_000, state="deferred",
        started_at=ago(minutes=30))


@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
class AdminInABrowser(StaticLiveServerTestCase):
    """Each test logs in for real, through the admin's login form."""

    selenium: ClassVar[Any]
    pictures = os.environ.get("CHUNKWISE_ADMIN_PICTURES")

    @classmethod
    def setUpClass(cls) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        super().setUpClass()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--window-size=1600,1000", "--force-device-scale-factor=1"):
            options.add_argument(argument)
        cls.selenium = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        cls.selenium.implicitly_wait(5)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.selenium.quit()
        super().tearDownClass()

    def setUp(self) -> None:
        from django.contrib.auth.models import Permission, User

        runs()

        def perms(*codenames: str) -> list[Permission]:
            return list(Permission.objects.filter(content_type__app_label="chunkwise",
                                                  codename__in=codenames))

        User.objects.create_superuser("admin", "admin@example.com", PASSWORD)
        viewer = User.objects.create_user("viewer", password=PASSWORD, is_staff=True)
        viewer.user_permissions.set(perms("view_run", "view_failedrow"))
        marker = User.objects.create_user("marker", password=PASSWORD, is_staff=True)
        marker.user_permissions.set(perms("view_run", "retry_failed_rows"))
        User.objects.create_user("nobody", password=PASSWORD, is_staff=True)
        User.objects.create_user("customer", password=PASSWORD)

    # -- the browser --------------------------------------------------------------------

    def open(self, path: str) -> None:
        self.selenium.get(self.live_server_url + path)

    def login(self, username: str, then: str = "/admin/chunkwise/run/") -> None:
        from selenium.webdriver.common.by import By

        self.open(f"/admin/login/?next={then}")
        self.selenium.find_element(By.NAME, "username").send_keys(username)
        self.selenium.find_element(By.NAME, "password").send_keys(PASSWORD)
        self.selenium.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        self.selenium.find_element(By.CSS_SELECTOR, "#footer")  # the next page is there

    def texts(self, css: str) -> list[str]:
        from selenium.webdriver.common.by import By

        return [element.text for element in self.selenium.find_elements(By.CSS_SELECTOR, css)]

    def absent(self, css: str) -> bool:
        from selenium.webdriver.common.by import By

        self.selenium.implicitly_wait(0)
        try:
            return not self.selenium.find_elements(By.CSS_SELECTOR, css)
        finally:
            self.selenium.implicitly_wait(5)

    def picture(self, name: str, width: int = 1800) -> None:
        """Save the page for the docs, when asked to (CHUNKWISE_ADMIN_PICTURES=docs)."""
        if not self.pictures:
            return
        # the page alone, whole: the admin's navigation folded, the window as tall as it
        self.selenium.execute_script(
            "localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
        self.selenium.refresh()
        height = self.selenium.execute_script("return document.body.scrollHeight")
        self.selenium.set_window_size(width, min(int(height) + 20, 2400))
        try:
            assert self.selenium.save_screenshot(str(Path(self.pictures) / name))
        finally:
            self.selenium.set_window_size(1600, 1000)
            self.selenium.execute_script("localStorage.clear()")

    def row_of(self, run: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.selenium.find_element(
            By.XPATH, f"//table[@id='result_list']//tr[th/a[text()='{run}']]")

    # -- the tests ----------------------------------------------------------------------

    def test_a_superuser_sees_every_run_and_marks_failed_rows_for_retry(self) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        from chunkwise.django.models import Checkpoint, RetryRequest

        self.login("admin")
        names = self.texts("#result_list tbody th.field-name")
        assert sorted(names) == [
            "billing.0003_recompute_totals[0]", "lab.0002_bump_items[0]",
            "lab.0003_setbased_items[0]", "later.0002_fill_labels[0]",
            "shop.0002_customer_status[0]"], names
        sharded = self.row_of("shop.0002_customer_status[0]")
        cells = {cell.get_attribute("class").split()[0].removeprefix("field-"): cell.text
                 for cell in sharded.find_elements(By.CSS_SELECTOR, "td")}
        # four shards folded into one line: 700,000 + 740,000 + 780,000 + 820,000
        assert cells["rows_shown"] == "3,040,000 / 5,000,000", cells
        assert cells["progress_shown"] == "60.8%" and cells["state_shown"] == "running"
        assert cells["lock_wait_shown"] == "12.0 s" and cells["rate_shown"] != "-"
        assert cells["eta_shown"] != "-" and cells["owner"] == \
            "DataMigration shop/customer-status"
        halted = self.row_of("billing.0003_recompute_totals[0]").find_element(
            By.CSS_SELECTOR, ".chunkwise-state")
        # the state's colour is the admin's own error red: admin.css was served and applies
        assert halted.value_of_css_property("background-color") == "rgba(186, 33, 33, 1)"
        self.picture("admin-runs.png", width=2200)  # every column, unscrolled

        before = list(Checkpoint.objects.order_by("pk").values())
        for run in ("lab.0002_bump_items[0]", "billing.0003_recompute_totals[0]"):
            self.row_of(run).find_element(By.CSS_SELECTOR, "input.action-select").click()
        Select(self.selenium.find_element(By.NAME, "action")).select_by_value(
            "mark_failed_rows_for_retry")
        self.selenium.find_element(By.CSS_SELECTOR, "button[name=index]").click()
        [marked] = self.texts("ul.messagelist li.success")
        assert marked == (
            "Marked for retry: the 3 failed rows of lab.0002_bump_items[0] forward. The next "
            "`manage.py chunkwise_run lab 0002_bump_items` retries them (or --retry-failed; "
            "in a cluster, the DataMigration's spec.retryFailed: true).")
        [refused] = self.texts("ul.messagelist li.warning")
        assert refused == (
            "Not marked: billing.0003_recompute_totals[0] forward is not done (halted): its "
            "failed rows are retried once every row of the run has been through it; finish "
            "the run, then mark it.")
        assert [(mark.app_label, mark.requested_by) for mark in RetryRequest.objects.all()] \
            == [("lab", "admin")]
        assert list(Checkpoint.objects.order_by("pk").values()) == before  # not a field moved

        self.selenium.find_element(By.LINK_TEXT, "shop.0002_customer_status[0]").click()
        assert self.texts("table.chunkwise-shards tbody td:first-child") == [
            "0 of 4", "1 of 4", "2 of 4", "3 of 4"]
        assert self.absent("input[name=_save]") and self.absent("a.deletelink")
        self.picture("admin-run.png")

        self.open("/admin/chunkwise/run/")
        self.selenium.find_element(By.LINK_TEXT, "lab.0002_bump_items[0]").click()
        page = self.selenium.find_element(By.ID, "content").text
        assert "its failed rows were marked for retry by admin at " in page
        verification = [self.texts(f".field-{name} .readonly") for name in
                        ("remaining_shown", "missed_shown", "verified_shown")]
        assert verification[:2] == [["3"], ["0"]] and verification[2] != ["-"], verification
        self.selenium.find_element(By.LINK_TEXT, "3").click()  # the failed rows, linked
        assert sorted(self.texts("#result_list tbody th.field-key")) == ["137", "1500", "2999"]
        assert set(self.texts("#result_list tbody td.field-run_shown")) == {
            "lab.0002_bump_items[0] forward"}
        assert "3 failed rows" in self.texts("p.paginator")[0]
        self.picture("admin-failed-rows.png")

    def test_view_permission_shows_everything_and_allows_nothing(self) -> None:
        """A staff user with the view permissions sees the runs and the failed rows, with
        no action and nothing to save; the action posted by hand is refused as well."""
        from selenium.webdriver.common.by import By

        from chunkwise.django.models import RetryRequest

        self.login("viewer")
        assert len(self.texts("#result_list tbody tr")) == 5
        assert self.absent("#action-toggle") and self.absent("select[name=action]")
        self.selenium.find_element(By.LINK_TEXT, "lab.0002_bump_items[0]").click()
        assert self.absent("input[name=_save]") and self.absent("a.deletelink")
        self.selenium.find_element(By.LINK_TEXT, "3").click()
        assert len(self.texts("#result_list tbody tr")) == 3

        client = Client()
        assert client.login(username="viewer", password=PASSWORD)
        run = self.selenium.current_url.rsplit("run=", 1)[1]
        client.post("/admin/chunkwise/run/", {"action": "mark_failed_rows_for_retry",
                                              "_selected_action": [run], "index": "0"})
        assert not RetryRequest.objects.exists()

    def test_the_retry_permission_lets_a_staff_user_mark(self) -> None:
        """chunkwise.retry_failed_rows, with view_run: the action, for a user who is not
        a superuser; without view_failedrow, the failed rows are counted, not linked."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        from chunkwise.django.models import RetryRequest

        self.login("marker")
        row = self.row_of("lab.0002_bump_items[0]")
        assert row.find_element(By.CSS_SELECTOR, "td.field-failed_shown").text == "3"
        assert self.absent("td.field-failed_shown a")
        row.find_element(By.CSS_SELECTOR, "input.action-select").click()
        Select(self.selenium.find_element(By.NAME, "action")).select_by_value(
            "mark_failed_rows_for_retry")
        self.selenium.find_element(By.CSS_SELECTOR, "button[name=index]").click()
        assert len(self.texts("ul.messagelist li.success")) == 1
        assert RetryRequest.objects.get().requested_by == "marker"
        self.open("/admin/chunkwise/failedrow/")
        assert "403 Forbidden" in self.selenium.page_source

    def test_a_staff_user_without_permission_sees_nothing_of_chunkwise(self) -> None:
        self.login("nobody", then="/admin/")
        content = self.selenium.find_element("id", "content").text
        assert "You don’t have permission to view or edit anything." in content
        assert "chunkwise" not in self.selenium.page_source.lower()
        for page, answer in (("/admin/chunkwise/run/", "403 Forbidden"),
                             ("/admin/chunkwise/failedrow/", "403 Forbidden"),
                             ("/admin/chunkwise/run/1/change/", "403 Forbidden"),
                             ("/admin/chunkwise/", "Not Found")):  # an app of nothing to see
            self.open(page)
            assert f"<h1>{answer}</h1>" in self.selenium.page_source, page

    def test_a_user_who_is_not_staff_cannot_log_in(self) -> None:
        self.login("customer")
        assert self.texts(".errornote") == [
            "Please enter the correct username and password for a staff account. Note that "
            "both fields may be case-sensitive."]
        self.open("/admin/chunkwise/run/")
        assert "/admin/login/" in self.selenium.current_url
