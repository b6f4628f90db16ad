"""The HTML report, opened in a real headless browser (Debian's chromium driven by selenium): it loads
with no console error and no network request, the call table sorts and filters, clicking an arrow of a
call's ladder shows that message's raw text, and a hostile capture's markup is shown as text and runs
nothing. Skips when chromium, chromedriver or selenium is missing (.ci/run installs them)."""
import shutil
import time

import pytest
from click.testing import CliRunner

import sipflow
from sipflow.cli import main
from sipflow.render.report import default_path, page_data

from conftest import SAMPLES
from pcaptools import sip_text, udp_frame, write_pcap

MIXED = ["busy-486.pcap", "basic-call-rtp.pcap", "cancel-487.pcap", "transfer-hold.pcap", "no-answer-408.pcap",
         "not-found-404.pcap", "register-401-200.pcap", "options-message-subscribe.pcap"]
A, B = "198.51.100.10", "203.0.113.20"       # documentation addresses: data inside the file only


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    binary, driver = _chromium(), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800",
                "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver), options=options)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _report(tmp_path, files, *extra):
    out = tmp_path / "report.html"
    r = CliRunner().invoke(main, ["report", *map(str, files), "-o", str(out), "--no-progress", *extra])
    assert r.exit_code == 0, r.output
    return out


def _open(drv, path, fragment=""):
    drv.get(path.as_uri() + fragment)
    drv.get_log("browser")     # the page's log starts here


def _errors(drv):
    return [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _samples(names):
    paths = [SAMPLES / n for n in names if (SAMPLES / n).exists()]
    if len(paths) < 3:
        pytest.skip("samples missing")
    return paths


def test_page_loads_with_no_console_error_and_no_network_request(browser, tmp_path):
    page = _report(tmp_path, _samples(MIXED))
    browser.get(page.as_uri())
    assert _errors(browser) == []
    # nothing was fetched: no script, style, font or image from anywhere (and the CSP forbids it)
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    csp = browser.execute_script(
        "return document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content")
    assert "default-src 'none'" in csp
    a = sipflow.analyze([str(p) for p in _samples(MIXED)])
    rows = browser.find_elements("css selector", "#calls tbody tr")
    assert len(rows) == len(a.calls) > 3
    assert browser.find_element("id", "count").text.startswith(f"{len(a.calls)} of {len(a.calls)} calls")
    charts = browser.find_elements("css selector", "#charts svg text")
    assert any(t.text == "Call outcomes" for t in charts)


def _column(drv, key):
    index = [th.get_attribute("data-key") for th in drv.find_elements("css selector", "#calls th")].index(key)
    return [tr.find_elements("css selector", "td")[index].text
            for tr in drv.find_elements("css selector", "#calls tbody tr")]


def test_call_table_sorts_by_a_column_both_ways(browser, tmp_path):
    page = _report(tmp_path, _samples(MIXED))
    _open(browser, page)
    header = browser.find_element("css selector", "#calls th[data-key='duration']")
    header.click()
    values = _column(browser, "duration")
    numbers = [float(v.split()[0]) for v in values if v != "-"]
    assert len(numbers) >= 2 and numbers == sorted(numbers)
    assert values[len(numbers):] == ["-"] * (len(values) - len(numbers))     # calls with no duration last
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    numbers_down = [float(v.split()[0]) for v in _column(browser, "duration") if v != "-"]
    assert numbers_down == sorted(numbers, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
    browser.find_element("css selector", "#calls th[data-key='from']").click()
    froms = _column(browser, "from")
    assert froms == sorted(froms)
    assert _errors(browser) == []


def test_call_table_filters_by_text_and_outcome(browser, tmp_path):
    page = _report(tmp_path, _samples(MIXED))
    _open(browser, page)
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element("id", "outcome")).select_by_value("busy")
    outcomes = _column(browser, "outcome")
    assert outcomes and set(outcomes) == {"busy"}
    Select(browser.find_element("id", "outcome")).select_by_value("")
    box = browser.find_element("id", "filter")
    box.send_keys("487")
    codes = _column(browser, "status")
    assert codes and set(codes) == {"487"}
    box.clear()
    box.send_keys(" ")          # an input event with an empty filter: every call again
    # a time of day (UTC): calls that started at or after it
    a = sipflow.analyze([str(p) for p in _samples(MIXED)])
    clocks = sorted(time.strftime("%H:%M:%S", time.gmtime(c.start)) for c in a.calls)
    since = clocks[len(clocks) // 2]
    browser.find_element("id", "since").send_keys(since)
    assert len(browser.find_elements("css selector", "#calls tbody tr")) == sum(c >= since for c in clocks)
    assert 0 < sum(c >= since for c in clocks) < len(clocks)


def test_clicking_an_arrow_shows_that_messages_raw_text_and_pins_it(browser, tmp_path):
    path = _samples(MIXED)
    page = _report(tmp_path, [SAMPLES / "transfer-hold.pcap"])
    a = sipflow.analyze(str(SAMPLES / "transfer-hold.pcap"))
    _open(browser, page)
    browser.find_element("css selector", "#calls tbody tr[data-n='1']").click()
    arrows = browser.find_elements("css selector", "#ladder .arrow")
    call = a.calls[0]
    assert len(arrows) == len(call.events) and path
    for pick in (0, 5, len(arrows) - 1):
        frame = int(arrows[pick].get_attribute("data-frame"))
        arrows[pick].click()
        shown = browser.find_element("css selector", "#message pre").text
        event = next(e for e in call.events if e.frame == frame)
        want = event.raw.decode("utf-8", "replace").replace("\r\n", "\n")
        assert shown.split("\n")[0] == want.split("\n")[0]
        assert shown.strip() == want.strip()
        assert f"frame {frame}" in browser.find_element("css selector", "#message .banner").text
    browser.find_element("css selector", "#message button.pin").click()
    arrows[0].click()
    pinned = browser.find_elements("css selector", "#pinned .msg")
    assert len(pinned) == 1 and pinned[0].get_attribute("data-msg") != \
        browser.find_element("css selector", "#message .msg").get_attribute("data-msg")
    # the time toggle redraws the ladder with wall-clock times
    browser.find_element("id", "time-abs").click()
    first_time = browser.find_elements("css selector", "#ladder text.time")[0].text
    assert first_time.count(":") == 2
    assert _errors(browser) == []


def test_a_call_number_in_the_address_opens_that_call(browser, tmp_path):
    page = _report(tmp_path, [SAMPLES / "transfer-hold.pcap"])
    _open(browser, page, "#call-2")
    title = browser.find_element("id", "call-title").text
    assert title.startswith("Call 2:") and "carol" in title


EVIL = {
    "display": '<script>window.__pwned = 1</script>',
    "agent": '<img src=x onerror="window.__pwned = 2">',
    "reason": '<b onclick="window.__pwned = 3">Busy</b>',
    "call_id": '</script><script>window.__pwned=4</script>@x',
    "body": '<iframe srcdoc="<script>parent.__pwned=5</script>"></iframe>',
}


def _hostile_capture(tmp_path):
    branch = "z9hG4bKevil"
    common = [("From", f'"{EVIL["display"]}" <sip:alice@x>;tag=f1'), ("Call-ID", EVIL["call_id"]),
              ("User-Agent", EVIL["agent"])]
    invite = sip_text(f"INVITE sip:bob@{B} SIP/2.0",
                      [("Via", f"SIP/2.0/UDP {A}:5060;branch={branch}"), *common, ("To", "<sip:bob@y>"),
                       ("CSeq", "1 INVITE"), ("Contact", f"<sip:alice@{A}>"), ("Content-Type", "text/html")],
                      EVIL["body"])
    busy = sip_text(f"SIP/2.0 486 {EVIL['reason']}",
                    [("Via", f"SIP/2.0/UDP {A}:5060;branch={branch}"), *common, ("To", "<sip:bob@y>;tag=t1"),
                     ("CSeq", "1 INVITE")])
    ack = sip_text(f"ACK sip:bob@{B} SIP/2.0",
                   [("Via", f"SIP/2.0/UDP {A}:5060;branch={branch}"), *common, ("To", "<sip:bob@y>;tag=t1"),
                    ("CSeq", "1 ACK")])
    recs = [(1_700_000_000, i * 1000, udp_frame(*((A, 5060, B, 5060) if i != 1 else (B, 5060, A, 5060)), m, i + 1))
            for i, m in enumerate((invite, busy, ack))]
    return write_pcap(tmp_path / "hostile.pcap", 1, recs)


def test_hostile_capture_text_is_shown_as_text_and_runs_nothing(browser, tmp_path):
    capture = _hostile_capture(tmp_path)
    page = _report(tmp_path, [capture])
    html = page.read_text()
    for text in EVIL.values():
        assert text not in html            # never written raw, anywhere in the file
    _open(browser, page)
    browser.find_element("css selector", "#calls tbody tr").click()
    for arrow in browser.find_elements("css selector", "#ladder .arrow"):
        arrow.click()
        browser.find_element("css selector", "#message button.pin").click()
    assert browser.execute_script("return window.__pwned") is None
    assert browser.execute_script("return document.images.length") == 0
    markup = "iframe, #call-detail b, #calls b, #problems b"
    assert browser.execute_script(f"return document.querySelectorAll('{markup}').length") == 0
    shown = browser.find_element("id", "pinned").text
    for key in ("display", "agent", "body"):
        assert EVIL[key] in shown          # the markup, as text a reader can see
    assert EVIL["call_id"] in browser.find_element("id", "call-title").text
    labels = [t.text for t in browser.find_elements("css selector", "#ladder .label")]
    assert f"486 {EVIL['reason']}" in labels
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert _errors(browser) == []


# --- without a browser ---------------------------------------------------------------------------

def test_page_data_details_only_the_first_calls_but_lists_them_all(tmp_path):
    a = sipflow.analyze([str(p) for p in _samples(MIXED)])
    data = page_data(a, max_detail=2)
    assert len(data["calls"]) == len(a.calls) and data["detailed"] == 2
    assert [c["detail"] is not None for c in data["calls"]] == [i < 2 for i in range(len(a.calls))]
    shown = {m["frames"] for m in data["messages"]}
    assert len(data["messages"]) == sum(len(c.events) for c in a.calls[:2]) and shown


def test_report_goes_under_reports_by_default_and_says_what_it_wrote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["report", str(SAMPLES / "busy-486.pcap"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert default_path([str(SAMPLES / "busy-486.pcap")]) == "reports/busy-486.html"
    written = tmp_path / "reports" / "busy-486.html"
    assert written.exists() and "busy-486.html: " in r.output and ", 1 call (1 with its ladder)" in r.output
    assert written.read_text().startswith("<!DOCTYPE html>")


def test_report_of_every_sample_and_shared_capture(tmp_path):
    """No capture we have makes the report fail; each page holds its calls and its messages' text."""
    from conftest import sample_files, shared_files
    from sipflow.render.report import render
    for path in sample_files() + shared_files():
        a = sipflow.analyze(str(path))
        html = render(a, [str(path)], max_detail=50)
        assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
        data = page_data(a, max_detail=50)
        assert len(data["calls"]) == len(a.calls)


def test_summary_chart_has_every_panel(tmp_path):
    import xml.etree.ElementTree as ET
    out = tmp_path / "summary.svg"
    r = CliRunner().invoke(main, ["summary", *map(str, _samples(MIXED)), "--chart", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    texts = ["".join(t.itertext()) for t in ET.parse(out).getroot().iter("{http://www.w3.org/2000/svg}text")]
    for title in ("Responses per method", "Call outcomes", "Calls and registrations over time (UTC)",
                  "Post-dial delay (PDD)", "Setup time (INVITE to ACK)", "MOS of the rated streams (E-model)"):
        assert title in texts
    assert "busy" in texts and "INVITE" in texts     # an outcome bar and a method bar are labelled
    png = tmp_path / "summary.png"
    assert CliRunner().invoke(main, ["summary", str(SAMPLES / "busy-486.pcap"), "--chart", str(png)]).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
    bad = CliRunner().invoke(main, ["summary", str(SAMPLES / "busy-486.pcap"), "--chart", str(tmp_path / "x.txt")])
    assert bad.exit_code == 2 and "--chart" in bad.output
